"""Print the workflow's rules as JSON: name, wildcards, resource keys, the inputs known at parse
time, and the conda env file each rule resolves to for every hardware key of the config. Run in a
subprocess by the tests (loading a Snakefile changes the working directory, PATH and sys.path of
the process that loads it).

  python tests/rule_inventory.py [CONFIGFILE ...]
"""

import json
import os
import sys
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.iocontainers import Wildcards
from snakemake.settings.enums import Quietness
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

ROOT = Path(__file__).resolve().parents[1]


def env_file(rule, wildcards: dict) -> str | None:
    # Snakemake has no public accessor for an unexpanded rule's conda env; `_conda_env` is what the
    # `conda:` directive stored (a path relative to the rule's file, or a function of wildcards).
    spec = rule._conda_env
    if spec is None:
        return None
    if callable(spec):
        spec = spec(Wildcards(fromdict=wildcards))
    path = Path(str(spec))
    if not path.is_absolute():
        path = Path(rule.snakefile).parent / path
    return os.path.relpath(path.resolve(), ROOT)


def main() -> None:
    configfiles = [Path(p).resolve() for p in sys.argv[1:]]
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(configfiles=configfiles),
            snakefile=ROOT / "Snakefile",
            workdir=ROOT,
        )
        workflow = workflow_api._workflow  # noqa: SLF001 (the loaded rules; no public accessor)
        hardware = sorted(workflow.config["hardware"])
        rules = []
        for rule in workflow.rules:
            names = sorted(rule.wildcard_names)
            envs = {}
            for hw in hardware if "hw" in names else [None]:
                wildcards = {name: "1" for name in names} | ({"hw": hw} if hw else {})
                envs[hw or ""] = env_file(rule, wildcards)
            rules.append({
                "name": rule.name,
                "wildcards": names,
                "has_shell": bool(rule.shellcmd),
                "local": rule.name in workflow._localrules,  # noqa: SLF001 (is_local is true for all rules off a cluster)
                "resources": sorted(rule.resources),
                "envs": envs,
                "log": bool(rule.log),
                "inputs": sorted(str(f) for f in rule.input if not callable(f)),  # those fixed at parse time
            })
    print(json.dumps({"hardware": hardware, "rules": rules}))


if __name__ == "__main__":
    main()
