"""The reference HarmonyFlow SyncBridge service: the embedded default target."""
