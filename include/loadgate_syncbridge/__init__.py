"""The example: the reference SyncBridge service gated by loadgate (scenarios, plan, demo)."""
