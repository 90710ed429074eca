"""The site as a Flower ClientApp, for a SuperNode in Flower's default (subprocess) mode.

Thin: the SuperNode's ``--node-config "site-config='/etc/fedsurv/site.toml'"`` names the site's
own configuration; the query bytes go to the same ``SiteNode.answer`` that the in-process run
and the process-isolation loop (site_node/flower_runtime.py) call. In this mode Flower runs
whatever bundle the SuperLink hands out, so a hospital should prefer ``fedsurv site start``
(process isolation, bundle hash pinned); this app exists for trials and for Flower's own tools.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from site_node.flower_runtime import RECORD, REPLY_KEY, REQUEST_KEY, SITE_KEY, build_answer, load_site_config, safe_reason

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    cfg = load_site_config(str(context.node_config["site-config"]))
    request = msg.content.config_records[RECORD][REQUEST_KEY]
    if not isinstance(request, bytes):
        raise TypeError("the message holds no fedsurv request")
    answer, _audit = build_answer(cfg)
    try:
        reply = answer(request)
    except Exception as e:  # noqa: BLE001 - the reason must not carry the site's data
        raise RuntimeError(f"site {cfg.name} could not answer: {safe_reason(e)}") from None
    return Message(RecordDict({RECORD: ConfigRecord({REPLY_KEY: reply, SITE_KEY: cfg.name})}), reply_to=msg)
