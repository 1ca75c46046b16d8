"""The ``keys`` commands' results for people (their JSON is their fields)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from reportsync.render.base import Rendered

if TYPE_CHECKING:  # annotations only: backup and sshkeys load cryptography (AEAD, scrypt, keys)
    from reportsync.backup import BackupContents, BackupWritten, Manifest, RestoreReport
    from reportsync.pgpkeys import ExportedKey, GeneratedPgpKey, ImportReport, KeyList, PgpKeyInfo
    from reportsync.sshkeys import GeneratedSshKey, ShownSshFile, SshCertificateInfo, SshKeyInfo


def pgp_list_text(listing: KeyList) -> Rendered:
    return Rendered(stdout=pgp_key_lines(listing.keys))


def pgp_key_lines(keys: Sequence[PgpKeyInfo]) -> list[str]:
    if not keys:
        return ["no PGP keys in this GnuPG home (create one: reportsync keys pgp generate)"]
    lines = []
    for key in keys:
        days = key.days_to_expiry()
        expiry = "never expires" if key.expires is None else (
            f"expires {key.expires:%Y-%m-%d} ({days} days)" if days is not None and days >= 0
            else f"EXPIRED {key.expires:%Y-%m-%d}")
        secret = "secret+public" if key.has_secret else "public only"
        lines.append(f"{key.fingerprint}  {key.algorithm}  created {key.created:%Y-%m-%d}  "
                     f"{expiry}  [{secret}]")
        lines.extend(f"    {uid}" for uid in key.uids)
    return lines


def generated_pgp_text(result: GeneratedPgpKey) -> Rendered:
    key = result.key
    rendered = Rendered(stdout=[
        f"created PGP key {key.fingerprint} ({key.algorithm}) for {', '.join(key.uids)}",
        f"  in {result.gnupg_home}; " + ("protected by a passphrase: the nightly run reads it "
                                         "from the 0600 file settings.gpg_passphrase_file names "
                                         "(or the variable gpg_passphrase_env names)"
                                         if result.protected else "no passphrase"),
    ])
    if result.exported_to is not None:
        rendered.stdout.append(f"  public key written to {result.exported_to}: send this file "
                               "to your provider (never the secret key)")
    if result.other_secret_keys:
        rendered.stdout.append(
            f"  this home now holds {len(result.other_secret_keys) + 1} secret keys; gpg decrypts "
            "each report with whichever key it was encrypted to")
    rendered.stdout.append("  next: back it up with `reportsync keys backup --out FILE`")
    rendered.stderr.extend(f"warning: {warning}" for warning in result.warnings)
    return rendered


def exported_key_text(exported: ExportedKey) -> Rendered:
    if exported.path is None:
        return Rendered(document=exported.armored)
    return Rendered(stdout=[f"public key {exported.fingerprint} written to {exported.path}"])


def import_text(report: ImportReport) -> Rendered:
    lines = [f"imported from {report.origin}: {report.secret_imported} secret, "
             f"{report.public_imported} public, {report.unchanged} unchanged"]
    lines.extend(f"  {fingerprint}" for fingerprint in report.fingerprints)
    return Rendered(stdout=lines, stderr=[f"warning: {warning}" for warning in report.warnings])


def generated_ssh_text(result: GeneratedSshKey) -> Rendered:
    out = result.key.path
    return Rendered(stdout=[
        f"created {out} and {out}.pub", f"  {result.key.describe()}",
        f"  send {out}.pub to your provider; set key_file = \"{out}\" in the config"])


def ssh_show_text(shown: ShownSshFile) -> Rendered:
    return Rendered(stdout=ssh_info_lines(shown.info))


def ssh_info_lines(info: SshKeyInfo | SshCertificateInfo) -> list[str]:
    from reportsync.sshkeys import SshKeyInfo  # loaded by whoever made ``info``

    if isinstance(info, SshKeyInfo):
        lines = [info.describe()]
        if info.encrypted:
            lines.append("  (the private key is protected by a passphrase)")
        return lines
    valid_to = "forever" if info.valid_to is None else f"{info.valid_to:%Y-%m-%d %H:%M} UTC"
    days_left = ""
    if info.days_left is not None:
        days_left = (f" ({info.days_left} days left)" if info.days_left >= 0
                     else f" (ended {-info.days_left} days ago)")
    status = {
        "valid": "valid",
        "expired": "EXPIRED: ask the certificate authority for a new certificate",
        "not yet valid": "NOT YET VALID: check this machine's clock and the certificate's start",
    }.get(info.status, info.status.upper())
    if not info.signature_valid:
        status += "; the CA SIGNATURE DOES NOT VERIFY"
    options = ", ".join(f"{name}={value}" if value else name
                        for name, value in info.critical_options) or "none"
    return [
        f"OpenSSH {info.cert_type} certificate {info.path}",
        f"  key id: {info.key_id}   serial: {info.serial}",
        f"  principals: {', '.join(info.principals) or '(any)'}",
        f"  valid from {info.valid_from:%Y-%m-%d %H:%M} UTC to {valid_to}{days_left}",
        f"  status: {status}",
        f"  signed by CA: {info.ca_fingerprint} ({info.ca_key_type})",
        f"  certified key: {info.bits} {info.fingerprint} ({info.key_type})",
        f"  critical options: {options}",
        f"  extensions: {', '.join(name for name, _ in info.extensions) or 'none'}",
    ]


def backup_text(written: BackupWritten) -> Rendered:
    manifest = written.manifest
    lines = [f"wrote {written.path} ({len(manifest.members)} members, encrypted with AES-256-GCM)"]
    lines += manifest_lines(manifest, str(written.path))[1:]
    lines.append("keep the passphrase apart from the file; test it: reportsync keys verify-backup")
    return Rendered(stdout=lines)


def verify_backup_text(contents: BackupContents) -> Rendered:
    return Rendered(stdout=manifest_lines(contents.manifest, str(contents.path)))


def manifest_lines(manifest: Manifest, path: str) -> list[str]:
    lines = [f"backup {path}: made {manifest.created} on {manifest.host or '?'} by reportsync "
             f"{manifest.tool_version}; every member matches its sha256"]
    for member in manifest.members:
        owner = f" (source {member.source})" if member.source else ""
        prints = f"  {', '.join(member.fingerprints)}" if member.fingerprints else ""
        lines.append(f"  {member.kind:16} {member.name}{owner}{prints}")
    lines.extend(f"  not included: {item}" for item in manifest.not_included)
    return lines


def restore_text(report: RestoreReport) -> Rendered:
    lines = [f"restored from {report.backup}:"]
    lines.extend(f"  {item}" for item in report.written)
    lines.extend(f"  unchanged: {item}" for item in report.unchanged)
    lines.append("next: run `reportsync doctor` to check gpg, keys and logins on this machine")
    return Rendered(stdout=lines,
                    stderr=[f"note: not in the backup: {item}" for item in report.not_included])
