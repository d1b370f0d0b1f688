"""Where the server's packages go in an installed pushwire (pyproject.toml has the rest).

The repository keeps `services/`, `cli/` and `bench/` at its top (DESIGN.md §7) and the code
imports them by those names. Installed, they live inside one package, `pushwire`
(site-packages/pushwire/services, ...), so the generic names never reach site-packages;
`pushwire` (cli/launch.py) puts that folder on the path of its own processes.
"""

from setuptools import find_packages, setup

ROOTS = ("services", "cli", "bench")

setup(
    packages=[f"pushwire.{name}" for name in find_packages(include=[f"{r}*" for r in ROOTS])],
    package_dir={f"pushwire.{root}": root for root in ROOTS},
    # The admin console's page, script and style (services/center/console, docs/console.md).
    package_data={"pushwire.services.center.console": ["*.html", "*.js", "*.css"]},
)
