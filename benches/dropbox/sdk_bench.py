"""One phase of `holdall-bench dropbox`, with the official Python SDK. `up` writes BENCH_BYTES
random bytes to BENCH_FILE (not timed), then reads it BENCH_CHUNK_BYTES at a time into an
upload session to /bench.bin; `down` downloads /bench.bin into BENCH_FILE.down and syncs it
to disk, as `holdall sync` does with what it receives. Prints the phase's seconds and the
CPU seconds this process used in it."""

import os
import sys
import time

import dropbox
from dropbox import files

dbx = dropbox.Dropbox(
    oauth2_access_token=os.environ["HOLDALL_TOKEN"],
    session=dropbox.create_session(ca_certs=os.environ["HOLDALL_CA"]),
    timeout=600,
)
size = int(os.environ["BENCH_BYTES"])
chunk = int(os.environ["BENCH_CHUNK_BYTES"])
path = os.environ["BENCH_FILE"]

if sys.argv[1] == "up":
    with open(path, "wb") as f:
        for _ in range(0, size, chunk):
            f.write(os.urandom(min(chunk, size - f.tell())))
        os.fsync(f.fileno())
    started, cpu = time.monotonic(), time.process_time()
    with open(path, "rb") as f:
        session = dbx.files_upload_session_start(f.read(chunk))
        cursor = files.UploadSessionCursor(session_id=session.session_id, offset=f.tell())
        while size - cursor.offset > chunk:
            dbx.files_upload_session_append_v2(f.read(chunk), cursor)
            cursor.offset = f.tell()
        md = dbx.files_upload_session_finish(f.read(), cursor, files.CommitInfo(path="/bench.bin"))
    elapsed = time.monotonic() - started
    assert md.size == size, md
else:
    started, cpu = time.monotonic(), time.process_time()
    md = dbx.files_download_to_file(path + ".down", "/bench.bin")
    with open(path + ".down", "rb") as f:
        os.fsync(f.fileno())
    elapsed = time.monotonic() - started
    assert md.size == size and os.path.getsize(path + ".down") == size, md
print(f"{elapsed:.6f} {time.process_time() - cpu:.6f}")
