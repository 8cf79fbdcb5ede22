"""The probes' answers."""

from __future__ import annotations

from marshmallow import Schema, fields


class LivenessSchema(Schema):
    status = fields.String(metadata={"enum": ["ok"]})


class ReadinessSchema(Schema):
    ready = fields.Boolean(metadata={"description": "false: the answer is a 503"})
    checks = fields.Dict(
        keys=fields.String(),
        metadata={
            "description": "`database`, `migrations`, `policy` (a refused edit shows as "
            "`state: stale` with its messages), `intake` and any `notes`"
        },
    )
