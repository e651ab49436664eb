"""`ray start` for a worker node joining a head on 127.0.0.1 (cluster/local.sh), loopback only.

With RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 Ray binds every port of a node to 127.0.0.1, but its
`ray start` then refuses to start a worker node (multi-node clusters are off on laptop OSes),
and it rewrites the address 127.0.0.1 to the machine's network IP, where a loopback head is not
listening. This wrapper lets the worker node through that guard and keeps 127.0.0.1; the
node's processes still read the variable (=0) from the environment and bind to loopback.
"""

import sys

from hbt.compat import ray_constants, ray_services  # Ray's internals, checked to exist
from hbt.errors import HbtError

try:
    constants, services = ray_constants(), ray_services()
except HbtError as error:
    sys.exit(f"error: {error}")
constants.ENABLE_RAY_CLUSTER = True  # past `ray start`'s guard; the children read the env var
services.resolve_ip_for_localhost = lambda host: host  # 127.0.0.1 stays 127.0.0.1

from ray.scripts.scripts import main  # noqa: E402 - after the two patches above

sys.exit(main())
