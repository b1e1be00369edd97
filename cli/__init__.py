"""assay's command-line interface: a thin layer over the library API."""

from assay.cli.app import cli, main
from assay.cli.audit_cmds import audit
from assay.cli.gate_cmds import bom_cmd, gate
from assay.cli.incident_cmds import incident, playbook
from assay.cli.init_cmd import init
from assay.cli.key_cmds import key
from assay.cli.model_cmds import dataset, register
from assay.cli.policy_cmds import policy
from assay.cli.registry_cmds import COMMANDS as REGISTRY_COMMANDS
from assay.cli.rollback_cmds import rollback_cmd
from assay.cli.serve_cmds import serve
from assay.cli.sign_cmds import sign, verify
from assay.cli.watermark_cmds import trace, watermark

for _command in (
    init,
    key,
    sign,
    verify,
    register,
    dataset,
    rollback_cmd,
    watermark,
    trace,
    incident,
    playbook,
    audit,
    policy,
    serve,
    gate,
    bom_cmd,
):
    cli.add_command(_command)
for _command in REGISTRY_COMMANDS:
    cli.add_command(_command)

__all__ = ["cli", "main"]
