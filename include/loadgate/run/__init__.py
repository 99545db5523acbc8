"""One gate run: its folder and records, the checklist, seeding, gates and history."""
