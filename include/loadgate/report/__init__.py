"""The run report: Markdown, HTML, JSON and JUnit from the run folder."""
