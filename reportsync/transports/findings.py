"""The stable ids of what the connection steps can find (doctor's ``--json`` ``id``).

docs/troubleshooting.md lists every id with its meaning and remedy; ``tests/test_docs.py`` checks
that the ids documented there are exactly these and doctor's own (``doctor/findings.py``). An id
names a finding, not its wording: the text may improve, the id stays.
"""

from __future__ import annotations

from reportsync.vocab import StrEnum


class StepFinding(StrEnum):
    # dns
    DNS_OK = "dns.ok"
    DNS_TIMEOUT = "dns.timeout"
    DNS_UNRESOLVED = "dns.unresolved"
    # tcp
    TCP_OK = "tcp.ok"
    TCP_REFUSED = "tcp.refused"
    TCP_TIMEOUT = "tcp.timeout"
    TCP_FAILED = "tcp.failed"
    # banner: is it the protocol we expect?
    BANNER_OK = "banner.ok"
    BANNER_FTP_SERVER = "banner.ftp-server"  # an sftp source on an FTP port
    BANNER_SSH_SERVER = "banner.ssh-server"  # an ftp/ftps source on an SSH port
    BANNER_NOT_SSH = "banner.not-ssh"
    BANNER_NOT_FTP = "banner.not-ftp"
    BANNER_SILENT = "banner.silent"  # an FTP port that never greets (implicit FTPS, a firewall)
    BANNER_CLOSED = "banner.closed"
    BANNER_LOST = "banner.lost"
    BANNER_ALGORITHMS = "banner.algorithms"
    BANNER_NO_GREETING = "banner.no-greeting"
    BANNER_HANDSHAKE_TIMEOUT = "banner.handshake-timeout"
    BANNER_HANDSHAKE_FAILED = "banner.handshake-failed"
    BANNER_TOO_MANY_SESSIONS = "banner.too-many-sessions"  # FTP 421 at the greeting
    BANNER_FAILED = "banner.failed"
    BANNER_CONFIG = "banner.config-problem"  # a local problem stopped the connection
    BANNER_SKIPPED_PASSWORD = "banner.skipped-password"
    BANNER_SKIPPED_CA_FILE = "banner.skipped-ca-file"
    # tls (ftps)
    TLS_OK = "tls.ok"
    TLS_UNVERIFIED = "tls.unverified"
    TLS_REFUSED = "tls.refused"
    TLS_HANDSHAKE = "tls.handshake-failed"
    TLS_FAILED = "tls.failed"
    # host key (sftp)
    HOST_KEY_OK = "host-key.ok"
    HOST_KEY_UNKNOWN = "host-key.unknown"
    HOST_KEY_CHANGED = "host-key.changed"
    HOST_KEY_REVOKED = "host-key.revoked"
    HOST_KEY_CERT_AUTHORITY = "host-key.cert-authority"
    HOST_KEY_UNREADABLE = "host-key.known-hosts-unreadable"
    # auth
    AUTH_OK = "auth.ok"
    AUTH_REFUSED = "auth.refused"  # FTP 530: wrong credentials
    AUTH_TLS_REQUIRED = "auth.tls-required"
    AUTH_REJECTED = "auth.rejected"  # FTP: another refusal of the login
    AUTH_TOO_MANY_SESSIONS = "auth.too-many-sessions"  # FTP: no session left for the account
    AUTH_DATA_PROTECTION = "auth.data-protection"  # FTPS: PBSZ/PROT P refused
    AUTH_KEY_REFUSED = "auth.key-refused"
    AUTH_PASSWORD_REFUSED = "auth.password-refused"
    AUTH_INCOMPLETE = "auth.incomplete"
    AUTH_IMPOSSIBLE = "auth.impossible"
    AUTH_OLD_RSA_SERVER = "auth.old-rsa-server"
    AUTH_CERTIFICATE_EXPIRED = "auth.certificate-expired"
    AUTH_CERTIFICATE_NOT_YET_VALID = "auth.certificate-not-yet-valid"
    AUTH_CERTIFICATE_PRINCIPALS = "auth.certificate-principals"
    AUTH_CERTIFICATE_SIGNATURE = "auth.certificate-signature"
    AUTH_CERTIFICATE_UNREADABLE = "auth.certificate-unreadable"
    AUTH_CERTIFICATE_PROBLEM = "auth.certificate-problem"  # WARN: logged in all the same
    AUTH_CERTIFICATE_EXPIRING = "auth.certificate-expiring"
    AUTH_NO_ANSWER = "auth.no-answer"
    AUTH_CLOSED = "auth.closed"
    AUTH_LOST = "auth.lost"
    AUTH_FAILED = "auth.failed"
    AUTH_SKIPPED_KEY = "auth.skipped-key"
    AUTH_SKIPPED_PASSWORD = "auth.skipped-password"
    # remote folder
    REMOTE_FOLDER_OK = "remote-folder.ok"
    REMOTE_FOLDER_MISSING = "remote-folder.missing"
    REMOTE_FOLDER_DENIED = "remote-folder.denied"
    REMOTE_FOLDER_REFUSED = "remote-folder.refused"
    REMOTE_FOLDER_NO_SFTP = "remote-folder.no-sftp"
    REMOTE_FOLDER_LOST = "remote-folder.lost"
    # ssh engine (sftp): what fetch will speak SSH with, and that it logs in
    SSH_ENGINE_PARAMIKO = "ssh-engine.paramiko"
    SSH_ENGINE_OPENSSH = "ssh-engine.openssh"
    SSH_ENGINE_OPENSSH_FAILED = "ssh-engine.openssh-failed"
    SSH_ENGINE_UNUSABLE = "ssh-engine.unusable"
    # data channel (ftp/ftps)
    DATA_CHANNEL_OK = "data-channel.ok"
    DATA_CHANNEL_TIMEOUT = "data-channel.timeout"
    DATA_CHANNEL_REFUSED = "data-channel.refused"
    DATA_CHANNEL_SILENT = "data-channel.silent"
    DATA_CHANNEL_PASSIVE_REFUSED = "data-channel.passive-refused"
    DATA_CHANNEL_TLS_REFUSED = "data-channel.tls-refused"
    DATA_CHANNEL_NAT = "data-channel.nat"
    DATA_CHANNEL_ACTIVE = "data-channel.active"
    DATA_CHANNEL_FAILED = "data-channel.failed"
    # the local files a transport reads (doctor's config checks)
    KEY_FILE_OK = "key-file.ok"
    KEY_FILE_MISSING = "key-file.missing"
    KEY_FILE_TOO_OPEN = "key-file.too-open"
    KEY_FILE_UNUSABLE = "key-file.unusable"
    KNOWN_HOSTS_OK = "known-hosts.ok"
    KNOWN_HOSTS_MISSING = "known-hosts.missing"
    KNOWN_HOSTS_NO_KEY = "known-hosts.no-key"
    KNOWN_HOSTS_UNREADABLE = "known-hosts.unreadable"
    CA_FILE_OK = "ca-file.ok"
    CA_FILE_UNUSABLE = "ca-file.unusable"
