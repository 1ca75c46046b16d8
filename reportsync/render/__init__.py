"""Result objects → text for people, JSON for machines. No I/O: the CLI writes what this returns.

Every command's core returns a frozen result carrying its exit code (``reportsync.results``).
For people, one text function per result returns a ``Rendered`` (stdout lines, stderr lines, or
the document asked for); for machines, ``envelope`` wraps any result in the one versioned JSON
document, serialized by the one ``to_json`` (``render.envelope``).
"""

from reportsync.render.base import Rendered, error_lines
from reportsync.render.doctor import doctor_text
from reportsync.render.envelope import JSON_VERSION, dumps, envelope, to_json
from reportsync.render.fetch import deletion_lines, fetch_text, held_back_line, notice_line
from reportsync.render.keys import (
    backup_text,
    exported_key_text,
    generated_pgp_text,
    generated_ssh_text,
    import_text,
    manifest_lines,
    pgp_key_lines,
    pgp_list_text,
    restore_text,
    ssh_info_lines,
    ssh_show_text,
    verify_backup_text,
)
from reportsync.render.ledger import (
    ledger_migrate_text,
    retention_text,
    status_text,
    verify_text,
)
from reportsync.render.notify import monitored_fetch_text, monitoring_lines
from reportsync.render.setup import init_text, schedule_text
from reportsync.units import human_bytes

__all__ = [
    "JSON_VERSION", "Rendered", "backup_text", "deletion_lines", "doctor_text", "dumps",
    "envelope", "error_lines", "exported_key_text", "fetch_text", "generated_pgp_text",
    "generated_ssh_text", "held_back_line", "human_bytes", "import_text", "init_text",
    "ledger_migrate_text", "manifest_lines", "monitored_fetch_text", "monitoring_lines",
    "notice_line", "pgp_key_lines", "pgp_list_text", "restore_text", "retention_text",
    "schedule_text", "ssh_info_lines", "ssh_show_text", "status_text", "to_json",
    "verify_backup_text", "verify_text",
]
