"""Checks kubesink's SLS emulator against the official Python SDK, unchanged.

Run by the Rust test `sls_emulator_conforms_to_python_sdk`
(tests/tests/e2e/sls.rs), which installs `aliyun-log-python-sdk` into a
virtualenv and starts the emulator. Usage:

    python conformance.py ENDPOINT PROJECT LOGSTORE KEY_ID KEY_SECRET

It puts logs through `LogClient.put_logs` with each compression the SDK
offers (lz4, the default; zstd; none) and on both paths (`shards/lb` and
`shards/route?key=`), reads everything back with `list_shards`,
`get_cursor` and `pull_logs` (lz4, zstd and uncompressed responses), tries a
wrong secret and an unknown key, and prints one JSON object on stdout that
the Rust test checks. It raises on anything unexpected.
"""

import json
import sys

from aliyun.log import LogClient, LogItem, PutLogsRequest, LogException


def client_for(endpoint, key_id, secret):
    client = LogClient(endpoint, key_id, secret, source="conformance")
    # Against http://127.0.0.1:PORT the SDK would otherwise connect to
    # <project>.127.0.0.1 (see docs/reference.md, Simple Log Service).
    client._isRowIp = True
    return client


def put(client, project, logstore, tag, compress, compress_type=None, hash_key=None):
    items = []
    for i in range(3):
        item = LogItem(timestamp=1700000000 + i)
        item.set_contents([("tag", tag), ("i", str(i)), ("msg", "hello \u4e16\u754c %d" % i)])
        items.append(item)
    request = PutLogsRequest(
        project,
        logstore,
        topic="conformance",
        source="sdk-" + tag,
        logitems=items,
        hashKey=hash_key,
        compress=compress,
        compress_type=compress_type,
    )
    response = client.put_logs(request)
    return {"tag": tag, "request_id": response.get_request_id()}


def pull_all(client, project, logstore, accept):
    shards = client.list_shards(project, logstore).get_shards_info()
    out = []
    for shard in shards:
        shard_id = shard["shardID"]
        cursor = client.get_cursor(project, logstore, shard_id, "begin").get_cursor()
        end = client.get_cursor(project, logstore, shard_id, "end").get_cursor()
        groups = 0
        logs = []
        while True:
            if accept is None:
                resp = client.pull_logs(project, logstore, shard_id, cursor, count=2, compress=False)
            else:
                resp = client.pull_logs(
                    project, logstore, shard_id, cursor, count=2, accept_compress_type=accept
                )
            if resp.get_loggroup_count() == 0:
                break
            groups += resp.get_loggroup_count()
            logs.extend(resp.get_flatten_logs_json(decode_bytes=True))
            cursor = resp.get_next_cursor()
        out.append(
            {"shard": shard_id, "groups": groups, "logs": logs, "end_cursor_matches": cursor == end}
        )
    return out


def error_code(fn):
    try:
        fn()
    except LogException as e:
        return {"code": e.get_error_code(), "status": e.resp_status, "request_id": e.get_request_id()}
    raise AssertionError("the emulator accepted a request it should have refused")


def main():
    endpoint, project, logstore, key_id, secret = sys.argv[1:6]
    client = client_for(endpoint, key_id, secret)
    put_results = [
        put(client, project, logstore, "lz4", True),
        put(client, project, logstore, "zstd", True, compress_type="zstd"),
        put(client, project, logstore, "raw", False),
        put(client, project, logstore, "route-low", True, hash_key="00000000000000000000000000000000"),
        put(client, project, logstore, "route-high", True, hash_key="ffffffffffffffffffffffffffffffff"),
    ]
    result = {
        "put": put_results,
        "pulled_lz4": pull_all(client, project, logstore, "lz4"),
        "pulled_zstd": pull_all(client, project, logstore, "zstd"),
        "pulled_raw": pull_all(client, project, logstore, None),
        "wrong_secret": error_code(
            lambda: put(client_for(endpoint, key_id, secret + "-wrong"), project, logstore, "bad", True)
        ),
        "unknown_key": error_code(
            lambda: put(client_for(endpoint, key_id + "-unknown", secret), project, logstore, "bad", True)
        ),
        "unknown_logstore": error_code(
            lambda: put(client, project, logstore + "-missing", "bad", True)
        ),
    }
    json.dump(result, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
