"""Exit codes of ``loadgate run-stage`` (and ``summarize``), shared by every backend.

0    completed: the stage ran to its end
2    engine or input error: bad plan, arguments, users file or results (nothing was sent)
3    aborted by a criterion: this shard breached a rollback criterion, or another shard of
     the stage did (its abort marker); results are written
130  stopped by SIGINT (Ctrl-C), results written
143  stopped by SIGTERM after a graceful stop, results written
"""

EXIT_COMPLETED = 0
EXIT_ERROR = 2
EXIT_ABORTED = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
