"""robomimic tasks (Lift, PickPlaceCan, ToolHang) on robosuite 1.4: envs, scripted experts, data generation."""
