"""A trained policy on a robot controller (docs/deployment.md).

- ``export``: the policy's inference as one graph (ONNX, torch.export), checked against torch;
- ``onnx_policy``: ``OnnxPolicy``, the exported graph on onnxruntime with ``predict_action`` / ``select_action``,
  no torch needed;
- ``server``: ``PolicyServer``, openpi's websocket protocol with API keys, health and strict request checks;
- ``client``: ``PolicyClient``; ``runtime``: ``ControlLoop``, a fixed-rate loop with chunk hand-over modes;
- ``spec``: what a deployed policy takes and gives; ``wire``: the msgpack-numpy encoding; ``best_of_n``:
  choosing among sampled chunks; ``load``, ``tasks``, ``cli``: checkpoints, simulators and the commands.
"""
