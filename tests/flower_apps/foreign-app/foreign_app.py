"""Code a coordinator might push to hospitals: it writes a marker file wherever it runs."""

import json
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

server = ServerApp()
client = ClientApp()


@client.query()
def query(msg: Message, context: Context) -> Message:
    Path(str(context.run_config["marker"])).write_text(f"foreign code ran at node {context.node_id}\n")
    return Message(RecordDict({"fedsurv": ConfigRecord({"reply": b"pwned", "site-name": "?"})}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    job_dir = Path(str(context.run_config["job"])).parent
    wanted = set(str(context.run_config["sites"]).split(","))
    nodes = [n.node_id for n in grid.get_nodes() if n.name in wanted]
    msgs = [Message(RecordDict({"fedsurv": ConfigRecord({"request": b"hello"})}), dst_node_id=n,
                    message_type=MessageType.QUERY, ttl=60) for n in nodes]
    replies = list(grid.send_and_receive(msgs, timeout=30))
    out = {"ok": True, "nodes": len(nodes),
           "errors": [r.error.reason for r in replies if r.has_error()],
           "answers": sum(1 for r in replies if not r.has_error())}
    (job_dir / "outcome.json").write_text(json.dumps(out))
