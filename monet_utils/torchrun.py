"""torchrun as the child of a notebook kernel or of `python -m monet_utils train`.

    python -m monet_utils.torchrun --parent PID [torchrun's arguments]

`launch.launch_workers` starts this in a session of its own, so that a signal to its parent's
process group (Jupyter's interrupt, Ctrl-C in a terminal) does not reach it: the parent forwards
exactly one SIGINT, which torchrun passes on once to every worker, and each stops after its step
with a checkpoint. Three things differ from a plain `torchrun`, which it replaces on a command line too
(`python -m monet_utils.torchrun --standalone --nproc_per_node=2 -m monet_utils train ...`):
- it stops when its parent is gone (a kernel restarted, a `kill -9`): SIGTERM to itself, which
  torchrun passes on to the workers, so no worker trains on with no one to read it;
- after a stop, the workers get STOP_GRACE_SECONDS to write their checkpoint, not torchrun's 30 s;
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
# What torchrun gives its workers after it passes a stop on, before it kills them (its own: 30 s).
# A stop during an evaluation finishes it, trains one step, then writes a checkpoint: on Google
# Drive, a 1 GB checkpoint of the U-Net can take minutes.
STOP_GRACE_SECONDS = 300


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


def give_a_stop_time_to_checkpoint() -> None:
    """torchrun kills its workers 30 s after it passes a stop signal on: a stop that outlasts that
    lost its checkpoint without a word. After a stop, and only then, they get STOP_GRACE_SECONDS:
    when a worker has failed instead, the others may wait in a collective that never ends."""
    from torch.distributed.elastic.multiprocessing import PContext, SignalException

    close = PContext.close

    def close_after_the_checkpoint(self, death_sig=None, timeout=30):
        stopping = isinstance(sys.exc_info()[1], SignalException)  # torchrun closes while it handles the stop
        close(self, death_sig, max(timeout, STOP_GRACE_SECONDS) if stopping else timeout)

    PContext.close = close_after_the_checkpoint


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

    give_a_stop_time_to_checkpoint()
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
