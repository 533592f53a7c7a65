"""The lease script's record of what reached the log: one mark per address.

dnsmasq runs its lease script (``old``) for every lease of the bridge at each SIGHUP (an entry
taken out: a release, a free, a changed entry) and at each start (every lease it reads back).
Each run was a ``netledger dhcp-event`` process (a Python start, 0.3-1 s of CPU) and a request
that appends nothing: a deallocation on a bridge of 250 leases cost 250 of them, the bridge's
size, not the change. Now the shell wrapper keeps ``<state dir>/reported/<address>`` holding
``<mac or DUID> <expiry>`` (dnsmasq's ``DNSMASQ_LEASE_EXPIRES``) of the lease last reported,
made only once ``dhcp-event`` succeeded (the log has it: a lease of an address not allocated
to that MAC is refused, exit 1, no mark), and ends at once on an ``old`` matching it.

Written before the report, made after it: the script writes ``<address>.sending.<its pid>``
first and renames it to the mark once ``dhcp-event`` succeeded (removed when it failed; left,
no mark, when the script is killed, until the address's next :func:`unmark`). An executor
taking the address's entry out while the report runs (the address freed and given again to
the same MAC under another name) removes it with the marks (:func:`unmark`): the rename finds
nothing, and the SIGHUP's ``old`` reports the lease afresh. (Written after the report, the
mark came back after the unmark, and the new allocation's lease waited for the client's
renewal.)

Why what it skips is already in the log:

- a lease the service never took (down, refused, the script killed) has no mark: the next
  ``old`` (SIGHUP, start, renewal) runs ``dhcp-event``, as before;
- a renewal moves the expiry: it runs ``dhcp-event`` (the safety net for a lease the log
  forgot without the executor seeing its entry go, below);
- a release (``del``) removes the mark before ``dhcp-event`` runs;
- an entry taken out (freed, changed) has its addresses' marks removed by the executor before
  the SIGHUP (:func:`unmark`, from executor/hostsdir.py ``sync``), so that the lease, if
  dnsmasq keeps it (its (MAC, address) still wanted: a changed entry; no ``dhcp_release``), is
  reported afresh: an address freed and given to the same MAC again is leased in the log;
- a dnsmasq restarted reads its leases file back with their expiries: they match, nothing
  runs; an executor restart changes nothing here; a state dir wiped has no marks: all run.

Left to the renewal, as before this record: an address freed and given again to the same MAC
and hostname between two executor passes (its entry never changed, no SIGHUP either). A
dnsmasq built without an RTC (``DNSMASQ_LEASE_LENGTH``, no expiry) cannot tell a renewal from a
replay: no mark is written, every event runs.

Beside a DHCPv6 lease's mark, ``<address>.client`` (``<DUID> <MAC>``, ``DNSMASQ_MAC``) says
which MAC dnsmasq saw that client with — the lease file keeps none —, for the executor's
stale-lease sweep (executor/leasefile.py): written at the lease whether or not it was reported,
kept by a lease read back without its MAC (a restart), taken by its release.

No import beyond the standard library (executor/hostsdir.py uses it).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
from collections.abc import Iterable

#: the marks' directory in the state dir (one lease script per state dir, so one directory
#: for all its bridges: an address is served by one bridge of a host)
DIR = "reported"
#: beside a DHCPv6 lease's mark, ``<address>.client``: ``<DUID> <MAC>`` of its client as dnsmasq
#: saw it (``DNSMASQ_MAC``), kept until its release
CLIENT = ".client"
#: a lease being reported: ``<address>.sending.<pid of the script>``, the mark to be, renamed
#: to the mark once the report succeeded (removed by :func:`unmark` like a mark)
SENDING = ".sending."


def script_lines(command: str, marks: str) -> list[str]:
    """The lease script's body around ``command`` (``... dhcp-event``, shell-quoted): skip an
    ``old`` already reported, mark what is reported (written before, made after: the module's
    docstring), unmark on ``del``. The skip costs the shell alone: builtins only (``read``,
    ``[``); ``rm`` runs on ``del`` and a failed report, ``mv`` beside a ``netledger`` run."""
    d = shlex.quote(marks)
    return [
        "# A lease the log has (its mark: MAC or DUID, expiry) is not sent again: dnsmasq runs",
        "# this for every lease at each SIGHUP and start (executor/leasemarks.py).",
        "nl_mark=",
        f'case "$3" in \'\'|*/*|.*) ;; *) nl_mark={d}/"$3" ;; esac',
        'nl_seen="$2 ${DNSMASQ_LEASE_EXPIRES:-}"',
        'if [ -n "$nl_mark" ]; then',
        "  # A DHCPv6 lease's client as dnsmasq saw it (the lease file keeps no MAC), for the",
        "  # executor's stale-lease sweep (client_mac); written when it changes only.",
        '  if [ -n "${DNSMASQ_MAC:-}" ] && { [ "$1" = add ] || [ "$1" = old ]; }; then',
        '    nl_client="$2 $DNSMASQ_MAC" nl_had_client=',
        f'    [ ! -f "$nl_mark{CLIENT}" ] || read -r nl_had_client < "$nl_mark{CLIENT}"',
        '    [ "$nl_had_client" = "$nl_client" ] \\',
        f'      || printf \'%s\\n\' "$nl_client" 2>/dev/null >"$nl_mark{CLIENT}"',
        "  fi",
        '  case "$1" in',
        '    old) if [ -n "${DNSMASQ_LEASE_EXPIRES:-}" ] && [ -f "$nl_mark" ] \\',
        '           && read -r nl_had < "$nl_mark" && [ "$nl_had" = "$nl_seen" ]; then',
        "           exit 0",
        "         fi ;;",
        f'    del) rm -f -- "$nl_mark" "$nl_mark{CLIENT}" ;;',
        "  esac",
        '  case "$1" in',
        "    add|old)",
        "      # The mark is written before the report, under this run's own name, and becomes",
        "      # the mark (a rename) once the report succeeded: the executor's unmark meanwhile",
        "      # (the entry taken out under the lease) takes it too, and no mark is made.",
        "      nl_sending=",
        '      if [ -n "${DNSMASQ_LEASE_EXPIRES:-}" ]; then',
        f'        nl_sending="$nl_mark{SENDING}$$"',
        '        printf \'%s\\n\' "$nl_seen" 2>/dev/null >"$nl_sending" || nl_sending=',
        "      fi",
        f'      {command} "$@" || {{',
        '        nl_rc=$?; [ -z "$nl_sending" ] || rm -f -- "$nl_sending"; exit "$nl_rc"',
        "      }",
        '      [ -z "$nl_sending" ] || mv -f -- "$nl_sending" "$nl_mark" 2>/dev/null',
        "      exit 0 ;;",
        "  esac",
        "fi",
    ]


def client_mac(marks: str, address: str, duid: str) -> str | None:
    """The MAC dnsmasq saw for the DHCPv6 client ``duid`` of ``address`` (spelled as in
    dnsmasq's lease file), None when it did not tell (a lease read back after a restart, not
    renewed since) or told of another client."""
    try:
        with open(os.path.join(marks, address + CLIENT), encoding="ascii") as fh:
            had = fh.read().split()
    except (OSError, ValueError):
        return None
    return had[1].lower() if len(had) == 2 and had[0] == duid else None


def addresses(entry: str) -> list[str]:
    """The addresses a host entry's name gives (``<mac>,<hostname>[,<ipv4>][,[<ipv6>]]``)."""
    return [f.strip("[]") for f in entry.split(",")[2:]]


def unmark(marks: str, gone: Iterable[str]) -> None:
    """Remove the marks of ``gone`` (addresses, any spelling: a mark is named as dnsmasq
    writes the address), those being written too (:data:`SENDING`).

    The marks being written go first, then the marks named as they are: a script renaming
    one of them to its mark after the listing below (its report returned meanwhile) has
    either lost it or made the mark removed after it."""
    want = set()
    for a in gone:
        with contextlib.suppress(ValueError):
            want.add(ipaddress.ip_address(a))
    if not want:
        return
    try:
        names = os.listdir(marks)
    except OSError:
        return
    sending, marked = [], set()
    for n in names:
        address = n.split(SENDING, 1)[0]
        try:
            hit = ipaddress.ip_address(address) in want
        except ValueError:
            continue
        if hit:
            marked.add(address)
            if address != n:
                sending.append(n)
    for n in [*sending, *sorted(marked)]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(marks, n))
