"""What a load generator process runs: one shard of one stage, and its summary."""
