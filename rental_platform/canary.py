"""`rental-platform deploy --check`: the first thing to run in a new account. A tiny job on the
configured remote runner imports the deployed package, starts Spark, reads the source password
from its secret and connects to the source with it, and reports back through Dagster Pipes: each
line printed is something the job proved, and any failure is the job's own error."""

import dagster as dg

from rental_platform.remote_code import code_package
from rental_platform.remote_runtime import RUNTIME_VERSION, is_runtime_version
from rental_platform.resources.remote_spark import RemoteSparkRunner, remote_spark_runner
from rental_platform.runs import step_errors
from rental_platform.settings import Settings

CANARY_OP = "deploy_check"


def check_remote_runtime(settings: Settings) -> list[str]:
    """Run the canary job; what it proved, a line each. Raises if the job failed or its code
    is not this machine's."""
    runner = remote_spark_runner(settings.runner)
    source = {"jdbc_url": settings.mysql.jdbc_url, "user": settings.mysql.user}

    # Annotations are evaluated here (no `from __future__ import annotations`): Dagster reads
    # the op's context and output types from them.
    @dg.op(name=CANARY_OP)
    def canary(context: dg.OpExecutionContext) -> dict[str, str]:
        return runner.check_runtime(context, source)

    @dg.job(name="rental_platform_deploy_check")
    def deploy_check() -> None:
        canary()

    instance = dg.DagsterInstance.ephemeral()
    result = deploy_check.execute_in_process(instance=instance, raise_on_error=False)
    if not result.success:
        errors = "\n".join(step_errors(result, instance))
        raise RuntimeError(f"the canary job failed on {runner.describe()}:\n{errors}")
    return canary_lines(runner, result.output_for_node(CANARY_OP))


def canary_lines(runner: RemoteSparkRunner, facts: dict[str, str]) -> list[str]:
    digest = code_package().digest
    if digest not in facts["package"]:
        raise RuntimeError(
            f"the canary job ran other code than this machine's ({facts['package']}, not "
            f"{digest}): run `rental-platform deploy`"
        )
    if not is_runtime_version(facts["python"]):
        raise RuntimeError(
            f"the canary job ran under Python {facts['python']} ({facts['python_prefix']}), not "
            f"{RUNTIME_VERSION}: the code needs the runtime `deploy` ships"
        )
    lines = [
        f"canary on {runner.describe()}:",
        f"  ran the deployed code {digest} under Python {facts['python']} "
        f"({facts['python_prefix']})",
        f"  started Spark {facts['spark']}; the driver reads DATETIMEs in "
        f"{facts['driver_time_zone']}",
        f"  took the source password from {facts['password_from']}",
    ]
    if "source" in facts:
        lines.append(f"  connected to the source {facts['source']}")
    lines.append(f"  Dagster Pipes: context and messages under {runner.pipes_uri}")
    return lines
