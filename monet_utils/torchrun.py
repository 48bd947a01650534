"""torchrun as the child of a notebook kernel or of `python -m monet_utils train`.

    python -m monet_utils.torchrun --parent PID [torchrun's arguments]

`launch.launch_workers` starts this in a session of its own, so that a signal to its parent's
process group (Jupyter's interrupt, Ctrl-C in a terminal) does not reach it: the parent forwards
exactly one SIGINT, which torchrun passes on once to every worker, and each stops after its step
with a checkpoint. Two things differ from a plain `torchrun`:
- it stops when its parent is gone (a kernel restarted, a `kill -9`): SIGTERM to itself, which
  torchrun passes on to the workers, so no worker trains on with no one to read it;
- a stop by a signal, or by a worker that already said why it failed, ends with that exit code
  and without torchrun's own traceback and error page.
Workers watch their own parent (`stop_with_parent`) in case this process is killed outright.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time

WATCH_SECONDS = 1.0


def stop_with_parent(parent: int | None = None) -> None:
    """Once `parent` (default: the current parent) is gone, SIGTERM this process, which then stops
    as it would for `kill`: training after its step, with a checkpoint. Standard output and error
    whose reader has gone (a pipe to the dead parent's reader) are sent to /dev/null first, so
    the way out cannot fail on a print."""
    parent = parent or os.getppid()

    def watch():
        while True:
            for fd in (1, 2):
                if _reader_gone(fd):
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, fd)
                    os.close(devnull)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(WATCH_SECONDS)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def _reader_gone(fd: int) -> bool:
    """A pipe whose read end is closed reports POLLERR to its writer."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def main(argv=None) -> int:
    # torchrun's own warnings on a stop ("Received 2 death signal, shutting down workers", ...) say
    # what the one line printed at the end says better. Some of its loggers read LOGLEVEL when
    # created, the others follow their parent's level.
    os.environ.setdefault("LOGLEVEL", "ERROR")
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    from torch.distributed import run
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--parent"]:
        stop_with_parent(int(argv[1]))
        argv = argv[2:]
    try:
        run.run(run.parse_args(argv))
    except SignalException as stop:
        return 128 + stop.sigval
    except ChildFailedError as failed:
        rank, failure = failed.get_first_failure()
        if failure.exitcode > 0:
            return failure.exitcode  # the worker printed its own one-line error
        name = signal.Signals(-failure.exitcode).name if failure.exitcode < 0 else "exit code 0"
        print(f"error: training process {rank} was ended by {name}; torchrun stopped the others", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
