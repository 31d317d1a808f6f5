"""The policy branch's hydra configs, installed as the package ``drifting_policy.configs`` (pyproject's
package-dir), so that ``drifting_policy.config`` finds them with importlib.resources in an editable install and
an installed wheel alike. ``image/`` is the image branch's, installed as ``drifting_image.configs``."""
