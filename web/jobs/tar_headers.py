"""Tar headers whose metadata is bounded before `tarfile` reads it.

`tarfile` reads a GNU long-name or long-link payload and a pax header whole, at whatever size the
header declares, before the member is handed to us: a few hundred bytes of bzip2 can declare
gigabytes. `BoundedTarInfo` (pass it as `tarfile.open(..., tarinfo=BoundedTarInfo)`) refuses such
a header before its payload is read, bounds how many metadata headers may chain in front of one
member (each one recurses into the next) and how much metadata one archive may carry in all (global
pax headers accumulate on the archive). Sparse members, whose maps `tarfile` also reads whole,
are refused: an image archive has no use for them.

A header that is damaged past the first member is refused too, not taken for the archive's end.

The refusal is an ArchiveError, which `tarfile.TarFile.next` re-raises untouched (its catch-all
only rewraps zlib errors), so it reaches the client as a one-line 400.
"""

from __future__ import annotations

import tarfile

from web.errors import ArchiveError

MAX_HEADER_BYTES = 64 * 1024  # one long name, long link or pax header
MAX_ARCHIVE_HEADER_BYTES = 1024 * 1024  # all of one archive's metadata headers together
MAX_CHAINED_HEADERS = 8  # metadata headers in front of one member

_METADATA = {
    tarfile.GNUTYPE_LONGNAME: "long-name",
    tarfile.GNUTYPE_LONGLINK: "long-link",
    tarfile.XHDTYPE: "pax",
    tarfile.XGLTYPE: "global pax",
    tarfile.SOLARIS_XHDTYPE: "pax",
}


class BoundedTarInfo(tarfile.TarInfo):
    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile):
        # Past the first member, tarfile takes a bad or cut header for the archive's end and
        # silently drops the members after it: a damaged archive is refused instead. (At offset 0
        # the error is how tarfile.open tells one compression from another: left to it.)
        try:
            return super().fromtarfile(archive)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as error:
            if archive.offset == 0:
                raise
            raise ArchiveError(f"tar archive damaged at byte {archive.offset}: {error}") from None

    def _proc_member(self, archive: tarfile.TarFile):
        kind = _METADATA.get(self.type)
        if kind is None:
            if self.type == tarfile.GNUTYPE_SPARSE:
                raise _sparse()
            return super()._proc_member(archive)
        if self.size > MAX_HEADER_BYTES:
            raise ArchiveError(
                f"a {kind} tar header declares {self.size} bytes"
                f" (at most {MAX_HEADER_BYTES} are read)"
            )
        # Counted on the archive: the chain recurses through fromtarfile, one level per header.
        depth = getattr(archive, "_bounded_depth", 0) + 1
        total = getattr(archive, "_bounded_header_bytes", 0) + self.size
        if depth > MAX_CHAINED_HEADERS:
            raise ArchiveError(f"more than {MAX_CHAINED_HEADERS} tar headers chained on one member")
        if total > MAX_ARCHIVE_HEADER_BYTES:
            raise ArchiveError(f"the tar headers hold more than {MAX_ARCHIVE_HEADER_BYTES} bytes")
        archive._bounded_depth, archive._bounded_header_bytes = depth, total
        try:
            return super()._proc_member(archive)
        finally:
            archive._bounded_depth = depth - 1

    def _proc_gnusparse_10(self, next, pax_headers, archive):  # noqa: A002 - tarfile's names
        raise _sparse()


def _sparse() -> ArchiveError:
    return ArchiveError("sparse tar members are not supported")
