"""Holdall's Dropbox API, checked with the official Python SDK, unmodified.

Run by client/tests/dropbox_sdk.rs against a real holdalld over HTTPS with a private CA.
The environment names the server (DROPBOX_API_HOST and friends, read by the SDK at import),
the CA, two users' tokens, the holdall binary and a folder for `holdall sync`. Each check
prints its name; any failure ends the run with a traceback and exit status 1.
"""

import datetime
import hashlib
import os
import pathlib
import subprocess
import threading
import time

import dropbox
import requests
from dropbox import files
from dropbox.exceptions import ApiError, AuthError

CA = os.environ["HOLDALL_CA"]
HOST = os.environ["DROPBOX_API_HOST"]
TOKEN = os.environ["HOLDALL_TOKEN"]
OTHER_TOKEN = os.environ["HOLDALL_OTHER_TOKEN"]
HOLDALL = os.environ["HOLDALL_BIN"]
SYNC_DIR = pathlib.Path(os.environ["HOLDALL_SYNC_DIR"])
SESSION_BYTES_MAX = int(os.environ["HOLDALL_SESSION_BYTES_MAX"])
MIB = 1 << 20


def client(token):
    return dropbox.Dropbox(oauth2_access_token=token, session=dropbox.create_session(ca_certs=CA))


DBX = client(TOKEN)
OTHER = client(OTHER_TOKEN)


def content_hash(data):
    blocks = [hashlib.sha256(data[i : i + 4 * MIB]).digest() for i in range(0, len(data), 4 * MIB)]
    return hashlib.sha256(b"".join(blocks)).hexdigest()


def pattern(seed, size):
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d-%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:size])


def holdall(*args, **kw):
    env = dict(os.environ, HOLDALL_LOG="warn")
    return subprocess.run([HOLDALL, *args], env=env, check=True, capture_output=True, text=True, **kw)


def sync_once():
    holdall("sync", "--once", str(SYNC_DIR))


def holdall_hash(path):
    return holdall("hash", str(path)).stdout.split()[0]


def expect_api_error(call, check):
    try:
        call()
    except ApiError as e:
        assert check(e.error), f"unexpected error {e.error!r}"
        return e
    raise AssertionError("the call succeeded")


def check(fn):
    fn()
    print("ok", fn.__name__, flush=True)


def account():
    me = DBX.users_get_current_account()
    assert len(me.account_id) == 40 and me.name.display_name == os.environ["HOLDALL_USER"], me
    usage = DBX.users_get_space_usage()
    assert usage.used >= 0 and usage.allocation.is_individual(), usage


def bad_token():
    try:
        client("not-a-token").users_get_current_account()
    except AuthError as e:
        assert e.error.is_invalid_access_token(), e.error
        return
    raise AssertionError("a bad token was accepted")


def upload_small_and_conflicts():
    md = DBX.files_upload(b"hello\n", "/Docs/hello.txt")
    assert md.path_display == "/Docs/hello.txt" and md.size == 6, md
    assert md.content_hash == content_hash(b"hello\n")
    same = DBX.files_upload(b"hello\n", "/docs/HELLO.txt")
    assert same.rev == md.rev and same.path_display == "/Docs/hello.txt", same
    e = expect_api_error(lambda: DBX.files_upload(b"other\n", "/Docs/hello.txt"), lambda e: e.is_path())
    assert e.error.get_path().reason.is_conflict(), e.error
    renamed = DBX.files_upload(b"other\n", "/Docs/hello.txt", autorename=True)
    assert renamed.path_display == "/Docs/hello (1).txt", renamed
    stale = files.WriteMode.update("0" * 32)
    expect_api_error(lambda: DBX.files_upload(b"x", "/Docs/hello.txt", mode=stale), lambda e: e.is_path())
    v2 = DBX.files_upload(b"hello v2\n", "/Docs/hello.txt", mode=files.WriteMode.update(md.rev))
    assert v2.rev != md.rev
    v3 = DBX.files_upload(b"hello v3\n", "/Docs/hello.txt", mode=files.WriteMode.overwrite)
    assert v3.size == 9
    _, resp = DBX.files_download("/Docs/hello.txt")
    assert resp.content == b"hello v3\n"
    accents = DBX.files_upload("naïve ✓\n".encode(), "/Docs/été ✓.txt")
    got, resp = DBX.files_download(accents.id)
    assert got.name == "été ✓.txt" and resp.content == "naïve ✓\n".encode(), got
    when = datetime.datetime(2021, 3, 4, 5, 6, 7)
    dated = DBX.files_upload(b"dated\n", "/Docs/dated.txt", client_modified=when)
    assert dated.client_modified == when and dated.server_modified > when, dated
    assert DBX.users_get_space_usage().used > 0
    DBX.files_delete_v2("/Docs/dated.txt")
    wrong = "0" * 64
    expect_api_error(lambda: DBX.files_upload(b"y", "/Docs/y.txt", content_hash=wrong), lambda e: e.is_content_hash_mismatch())


def large_upload_session():
    data = pattern(1, 10 * MIB + 123)
    cuts = [0, 3 * MIB, 7 * MIB + 5, 9 * MIB, len(data)]
    start = DBX.files_upload_session_start(data[: cuts[1]])
    cursor = files.UploadSessionCursor(session_id=start.session_id, offset=cuts[1])
    for a, b in zip(cuts[1:-2], cuts[2:-1]):
        DBX.files_upload_session_append_v2(data[a:b], cursor)
        cursor.offset = b
    e = expect_api_error(
        lambda: DBX.files_upload_session_append_v2(b"zz", files.UploadSessionCursor(start.session_id, 5)),
        lambda e: e.is_incorrect_offset(),
    )
    assert e.error.get_incorrect_offset().correct_offset == cursor.offset
    expect_api_error(
        lambda: OTHER.files_upload_session_finish(b"", cursor, files.CommitInfo(path="/stolen.bin")),
        lambda e: e.is_lookup_failed() and e.get_lookup_failed().is_not_found(),
    )
    commit = files.CommitInfo(path="/Big/large.bin", client_modified=None)
    md = DBX.files_upload_session_finish(data[cuts[-2] :], cursor, commit)
    assert md.size == len(data) and md.content_hash == content_hash(data), md
    _, resp = DBX.files_download("/Big/large.bin")
    assert resp.content == data
    expect_api_error(
        lambda: DBX.files_upload_session_append_v2(b"", cursor),
        lambda e: e.is_not_found(),
    )
    path = SYNC_DIR.parent / "large.bin"
    path.write_bytes(data)
    assert holdall_hash(path) == md.content_hash


def session_bounds_and_batch():
    start = DBX.files_upload_session_start(b"")
    cursor = files.UploadSessionCursor(session_id=start.session_id, offset=0)
    expect_api_error(
        lambda: DBX.files_upload_session_append_v2(b"x" * (SESSION_BYTES_MAX + 1), cursor),
        lambda e: e.is_too_large(),
    )
    entries = []
    for i in range(2):
        s = DBX.files_upload_session_start(b"batch %d\n" % i, close=True)
        c = files.UploadSessionCursor(session_id=s.session_id, offset=8)
        entries.append(files.UploadSessionFinishArg(c, files.CommitInfo(path=f"/Batch/b{i}.txt")))
    open_session = DBX.files_upload_session_start(b"not closed")
    c = files.UploadSessionCursor(session_id=open_session.session_id, offset=10)
    entries.append(files.UploadSessionFinishArg(c, files.CommitInfo(path="/Batch/open.txt")))
    result = DBX.files_upload_session_finish_batch_v2(entries)
    assert [e.is_success() for e in result.entries] == [True, True, False], result
    failure = result.entries[2].get_failure()
    assert failure.is_lookup_failed() and failure.get_lookup_failed().is_not_closed(), failure


def list_and_continue():
    listed = DBX.files_list_folder("", recursive=True)
    names = {e.path_display for e in listed.entries}
    assert {"/Docs", "/Docs/hello.txt", "/Big/large.bin", "/Batch/b1.txt"} <= names, names
    pages, result = 1, DBX.files_list_folder("/Docs", limit=1)
    seen = {e.name for e in result.entries}
    while result.has_more:
        result = DBX.files_list_folder_continue(result.cursor)
        seen |= {e.name for e in result.entries}
        pages += 1
    assert pages >= 2 and seen == {"hello.txt", "hello (1).txt", "été ✓.txt"}, (pages, seen)
    DBX.files_upload(b"new\n", "/Docs/new.txt")
    DBX.files_delete_v2("/Docs/hello (1).txt")
    changes = DBX.files_list_folder_continue(result.cursor)
    kinds = {(type(e).__name__, e.name) for e in changes.entries}
    assert ("FileMetadata", "new.txt") in kinds and ("DeletedMetadata", "hello (1).txt") in kinds, kinds
    expect_api_error(lambda: DBX.files_list_folder("/nowhere"), lambda e: e.is_path() and e.get_path().is_not_found())
    expect_api_error(
        lambda: DBX.files_list_folder("/Docs/new.txt"), lambda e: e.is_path() and e.get_path().is_not_folder()
    )
    expect_api_error(lambda: OTHER.files_list_folder_continue(result.cursor), lambda e: e.is_reset())


def api_files_reach_a_synced_folder_and_back():
    sync_once()
    assert (SYNC_DIR / "Docs" / "new.txt").read_bytes() == b"new\n"
    assert (SYNC_DIR / "Big" / "large.bin").stat().st_size == 10 * MIB + 123
    cursor = DBX.files_list_folder_get_latest_cursor("", recursive=True).cursor
    woke = {}

    def poll():
        started = time.monotonic()
        woke["changes"] = DBX.files_list_folder_longpoll(cursor, timeout=60).changes
        woke["after_s"] = time.monotonic() - started

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(1.5)
    saved = pattern(2, 5 * MIB + 7)
    (SYNC_DIR / "Docs" / "from_sync.bin").write_bytes(saved)
    sync_once()
    waiter.join(60)
    assert woke.get("changes") is True and woke["after_s"] < 30, woke
    changes = DBX.files_list_folder_continue(cursor)
    found = [e for e in changes.entries if e.name == "from_sync.bin"]
    assert found and found[0].content_hash == holdall_hash(SYNC_DIR / "Docs" / "from_sync.bin"), changes
    _, resp = DBX.files_download("/docs/from_sync.bin")
    assert resp.content == saved
    quiet = DBX.files_list_folder_get_latest_cursor("/Big").cursor
    DBX.files_upload(b"elsewhere\n", "/Docs/elsewhere.txt")
    started = time.monotonic()
    assert DBX.files_list_folder_longpoll(quiet, timeout=30).changes is False
    assert time.monotonic() - started > 25


def metadata_move_copy_delete():
    md = DBX.files_get_metadata("/docs/NEW.txt")
    assert isinstance(md, files.FileMetadata) and md.path_display == "/Docs/new.txt", md
    assert isinstance(DBX.files_get_metadata("/Docs"), files.FolderMetadata)
    expect_api_error(lambda: DBX.files_get_metadata("/missing.txt"), lambda e: e.is_path() and e.get_path().is_not_found())
    moved = DBX.files_move_v2("/Docs/new.txt", "/Moved/new.txt").metadata
    assert moved.path_display == "/Moved/new.txt" and moved.content_hash == md.content_hash, moved
    expect_api_error(lambda: DBX.files_get_metadata("/Docs/new.txt"), lambda e: e.is_path())
    copied = DBX.files_copy_v2("/Big", "/BigCopy").metadata
    assert isinstance(copied, files.FolderMetadata), copied
    _, resp = DBX.files_download("/BigCopy/large.bin")
    assert len(resp.content) == 10 * MIB + 123
    expect_api_error(lambda: DBX.files_copy_v2("/Big", "/BigCopy"), lambda e: e.is_to() and e.get_to().is_conflict())
    expect_api_error(lambda: DBX.files_move_v2("/nope", "/x"), lambda e: e.is_from_lookup())
    expect_api_error(lambda: DBX.files_move_v2("/Big", "/Big/inner"), lambda e: e.is_cant_move_folder_into_itself())
    DBX.files_create_folder_v2("/Empty")
    expect_api_error(lambda: DBX.files_create_folder_v2("/Empty"), lambda e: e.is_path() and e.get_path().is_conflict())
    DBX.files_delete_v2("/BigCopy")
    expect_api_error(lambda: DBX.files_get_metadata("/BigCopy/large.bin"), lambda e: e.is_path())
    expect_api_error(lambda: DBX.files_delete_v2("/BigCopy"), lambda e: e.is_path_lookup())
    deleted = DBX.files_get_metadata("/BigCopy", include_deleted=True)
    assert isinstance(deleted, files.DeletedMetadata), deleted


def revisions_and_restore():
    first = DBX.files_upload(b"one\n", "/Rev/r.txt")
    DBX.files_upload(b"two\n", "/Rev/r.txt", mode=files.WriteMode.overwrite)
    revs = DBX.files_list_revisions("/Rev/r.txt")
    assert [e.size for e in revs.entries] == [4, 4] and revs.entries[1].rev == first.rev, revs
    restored = DBX.files_restore("/Rev/r.txt", first.rev)
    assert restored.content_hash == first.content_hash
    _, resp = DBX.files_download("/Rev/r.txt")
    assert resp.content == b"one\n"
    _, old = DBX.files_download("/Rev/r.txt", rev=revs.entries[0].rev)
    assert old.content == b"two\n"
    expect_api_error(lambda: DBX.files_restore("/Rev/r.txt", "0" * 32), lambda e: e.is_invalid_revision())
    expect_api_error(lambda: DBX.files_list_revisions("/Rev/none.txt"), lambda e: e.is_path())


def search():
    found = DBX.files_search_v2("large")
    paths = [m.metadata.get_metadata().path_display for m in found.matches]
    assert "/Big/large.bin" in paths, paths
    opts = files.SearchOptions(path="/Batch")
    found = DBX.files_search_v2("b1", options=opts)
    assert [m.metadata.get_metadata().name for m in found.matches] == ["b1.txt"], found


def shared_folders():
    base, auth = f"https://{HOST}", {"Authorization": f"Bearer {TOKEN}"}
    made = requests.post(f"{base}/v1/namespaces", json={"mount_path": "Team"}, headers=auth, verify=CA)
    made.raise_for_status()
    ns = made.json()["ns"]
    member = {"user": os.environ["HOLDALL_OTHER_USER"], "mount_path": "Shared/Team"}
    requests.post(f"{base}/v1/namespaces/{ns}/members", json=member, headers=auth, verify=CA).raise_for_status()
    top = {e.path_display for e in OTHER.files_list_folder("").entries}
    assert "/Shared" in top, top
    assert isinstance(OTHER.files_get_metadata("/shared"), files.FolderMetadata)
    cursor = OTHER.files_list_folder_get_latest_cursor("", recursive=True).cursor
    woke = {}
    waiter = threading.Thread(target=lambda: woke.update(r=OTHER.files_list_folder_longpoll(cursor, timeout=60)))
    waiter.start()
    time.sleep(1.5)
    md = DBX.files_upload(b"the plan\n", "/Team/plan.txt")
    waiter.join(60)
    assert woke["r"].changes is True, woke
    moved = DBX.files_move_v2("/Docs/elsewhere.txt", "/team/elsewhere.txt").metadata
    assert moved.path_display == "/Team/elsewhere.txt", moved
    seen = {e.path_display for e in OTHER.files_list_folder_continue(cursor).entries}
    assert {"/Shared/Team/plan.txt", "/Shared/Team/elsewhere.txt"} <= seen, seen
    everything = {e.path_display for e in OTHER.files_list_folder("", recursive=True).entries}
    assert {"/Shared", "/Shared/Team", "/Shared/Team/plan.txt"} <= everything, everything
    _, resp = OTHER.files_download("/shared/team/PLAN.txt")
    assert resp.content == b"the plan\n" and md.content_hash == content_hash(b"the plan\n")
    expect_api_error(lambda: OTHER.files_get_metadata("/Docs/hello.txt"), lambda e: e.is_path())
    mine = DBX.files_get_metadata("/Docs/hello.txt")
    expect_api_error(lambda: OTHER.files_download(mine.id), lambda e: e.is_path() and e.get_path().is_not_found())
    expect_api_error(lambda: OTHER.files_copy_v2(mine.id, "/mine.txt"), lambda e: True)


def malformed_calls():
    url = f"https://{HOST}/2/files/upload"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"}
    bad = requests.post(url, headers={**headers, "Dropbox-API-Arg": "{not json"}, data=b"x", verify=CA)
    assert bad.status_code == 400 and "Dropbox-API-Arg" in bad.text, (bad.status_code, bad.text)
    missing = requests.post(url, headers=headers, data=b"x", verify=CA)
    assert missing.status_code == 400, missing.text
    unknown = requests.post(f"https://{HOST}/2/files/teleport", headers=headers, data=b"{}", verify=CA)
    assert unknown.status_code == 400 and "Unknown API function" in unknown.text, unknown.text
    try:
        DBX.files_list_folder_longpoll("forged-cursor", timeout=30)
        raise AssertionError("a forged cursor was accepted")
    except ApiError as e:
        assert e.error.is_reset(), e.error
    assert DBX.files_list_folder("/Batch").entries, "nothing changed by the bad calls"


def revoked_token_kills_its_cursor():
    base = f"https://{HOST}"
    made = requests.post(f"{base}/v1/tokens", json={"device": "sdk"}, headers={"Authorization": f"Bearer {TOKEN}"}, verify=CA)
    made.raise_for_status()
    token = made.json()
    cursor = client(token["token"]).files_list_folder_get_latest_cursor("").cursor
    gone = requests.delete(f"{base}/v1/tokens/{token['id']}", headers={"Authorization": f"Bearer {TOKEN}"}, verify=CA)
    gone.raise_for_status()
    try:
        DBX.files_list_folder_longpoll(cursor, timeout=30)
        raise AssertionError("a dead token's cursor was accepted")
    except AuthError as e:
        assert e.error.is_invalid_access_token(), e.error


for fn in [
    account,
    bad_token,
    upload_small_and_conflicts,
    large_upload_session,
    session_bounds_and_batch,
    list_and_continue,
    api_files_reach_a_synced_folder_and_back,
    metadata_move_copy_delete,
    revisions_and_restore,
    search,
    shared_folders,
    malformed_calls,
    revoked_token_kills_its_cursor,
]:
    check(fn)
print("all checks passed")
