"""What operators configure (profiles, pod settings) and what a run resolves to."""
