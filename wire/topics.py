"""Versioned MQTT topic names of the Nacelle contract (v1).

| topic                                          | from → to                    | retained | QoS |
|------------------------------------------------|------------------------------|----------|-----|
| nacelle/v1/global/round                        | cloud → every tier           | yes      | 1   |
| nacelle/v1/global/model                        | cloud → every tier           | yes      | 1   |
| nacelle/v1/region/{region}/update/{node_id}    | edge node → regional agg.    | no       | 1   |
| nacelle/v1/region/{region}/partial             | regional agg. → cloud        | no       | 1   |
| nacelle/v1/region/{region}/status/{node_id}    | edge node (last will) → ops  | yes      | 1   |
| nacelle/v1/region/{region}/alert/{node_id}     | edge node → cloud            | no       | 1   |

Regional brokers bridge `global/#` in from the cloud broker and their own region's `partial` and
`alert/#` out to it; updates and status never leave the region (they are the bulk of the bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROTOCOL_PREFIX = "nacelle/v1"
ROUND_TOPIC = f"{PROTOCOL_PREFIX}/global/round"
MODEL_TOPIC = f"{PROTOCOL_PREFIX}/global/model"
GLOBAL_FILTER = f"{PROTOCOL_PREFIX}/global/#"
PARTIAL_FILTER = f"{PROTOCOL_PREFIX}/region/+/partial"
ALERT_FILTER = f"{PROTOCOL_PREFIX}/region/+/alert/+"

# MQTT topic levels must not contain wildcards or separators; ids also name files and client ids.
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class InvalidIdentifierError(ValueError):
    """A region or node id that cannot be used as a topic level, file name or client id."""


def check_identifier(kind: str, value: str) -> str:
    if not _ID_PATTERN.fullmatch(value):
        raise InvalidIdentifierError(
            f"{kind} {value!r} must be 1-64 characters of letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )
    return value


@dataclass(frozen=True)
class RegionTopics:
    """Topics of one region."""

    region: str

    def __post_init__(self) -> None:
        check_identifier("region", self.region)

    @property
    def base(self) -> str:
        return f"{PROTOCOL_PREFIX}/region/{self.region}"

    @property
    def partial(self) -> str:
        return f"{self.base}/partial"

    @property
    def update_filter(self) -> str:
        return f"{self.base}/update/+"

    @property
    def alert_filter(self) -> str:
        return f"{self.base}/alert/#"

    def update(self, node_id: str) -> str:
        return f"{self.base}/update/{check_identifier('node id', node_id)}"

    def status(self, node_id: str) -> str:
        return f"{self.base}/status/{check_identifier('node id', node_id)}"

    def alert(self, node_id: str) -> str:
        return f"{self.base}/alert/{check_identifier('node id', node_id)}"


def region_of_partial_topic(topic: str) -> str | None:
    """The region named by a partial topic, or None when `topic` is not one."""
    parts = topic.split("/")
    if len(parts) == 5 and "/".join(parts[:3]) == f"{PROTOCOL_PREFIX}/region" and parts[4] == "partial":
        return parts[3]
    return None


def alert_topic_ids(topic: str) -> tuple[str, str] | None:
    """(region, node id) named by an alert topic, or None when `topic` is not one."""
    parts = topic.split("/")
    if len(parts) == 6 and "/".join(parts[:3]) == f"{PROTOCOL_PREFIX}/region" and parts[4] == "alert":
        return parts[3], parts[5]
    return None
