"""``python -m deployments.worker``: a process worker on ``Settings.work_pool``.

It is the ``worker`` service of ``deployments.services`` (the command the native
stack and Docker Compose run), so there is one definition of how workers start.
"""

import sys

from deployments.services import start

if __name__ == "__main__":
    sys.exit(start("worker"))
