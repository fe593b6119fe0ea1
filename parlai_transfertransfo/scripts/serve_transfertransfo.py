"""`parlai serve_transfertransfo`: the chat page and an OpenAI-compatible API, one model.

    parlai serve_transfertransfo -mf zoo:transfertransfo/smollm2_135m/model [--host 127.0.0.1] [--port 8080]

Open http://127.0.0.1:8080/ to chat; point any OpenAI client at http://127.0.0.1:8080/v1.
Every agent option works as in `parlai interactive` (`--inference`, `--persona`, ...): they
are the defaults of each request. Needs the `serve` extra (`./install.sh serve`).
"""
import os
import socket

from parlai.core.params import ParlaiParser
from parlai.core.script import ParlaiScript, register_script

from parlai_transfertransfo.errors import TransfertransfoError


def setup_args(parser=None):
    if parser is None:
        parser = ParlaiParser(True, True, "Serve a transfertransfo model: chat page and OpenAI-compatible API")
    group = parser.add_argument_group("serve_transfertransfo")
    group.add_argument("--host", type=str, default="127.0.0.1",
                       help="address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)")
    group.add_argument("--port", type=int, default=8080, help="TCP port (0: any free port)")
    group.add_argument("--api-key", type=str, default=None,
                       help="require 'Authorization: Bearer KEY' on /v1 and /api (the page asks for it)")
    group.add_argument("--model-id", type=str, default=None,
                       help="the model's name in /v1/models (default: from --model-file)")
    group.add_argument("--suggestions", type=int, default=3, help="suggested replies the page shows (0: none)")
    group.add_argument("--max-batch-rows", type=int, default=32,
                       help="most sequences decoded together (beams and choices count one each)")
    group.add_argument("--max-queue", type=int, default=256, help="requests waiting beyond this get 503")
    group.add_argument("--max-context-tokens", type=int, default=512,
                       help="context tokens the model reads per request (oldest history first, as "
                       "--text-truncate); 0: up to the model's positions")
    group.add_argument("--max-tokens-limit", type=int, default=256, help="largest max_tokens a request may ask")
    group.add_argument("--max-body-bytes", type=int, default=262144, help="larger request bodies get 413")
    group.add_argument("--max-message-chars", type=int, default=4000, help="longer messages get 400")
    group.add_argument("--max-messages", type=int, default=256, help="more messages in a request get 400")
    group.add_argument("--max-sessions", type=int, default=1000,
                       help="page sessions kept; when all were used within --session-ttl, a new one gets 503")
    group.add_argument("--session-ttl", type=float, default=1800, help="seconds before an idle page session expires")
    group.add_argument("--session-rate-limit", type=int, default=10,
                       help="new page sessions a minute per client address (429 past it; 0: no limit)")
    group.add_argument("--forwarded-allow-ips", type=str, default="",
                       help="behind a reverse proxy: its address(es), comma-separated ('*': any), whose "
                       "X-Forwarded-For names the client (for the per-client limit); default: trust none")
    group.add_argument("--cors-origins", type=str, default="",
                       help="comma-separated origins whose web pages may call the API (e.g. "
                       "https://app.example.com; '*': any); default: none")
    parser.set_defaults(interactive_mode=True)
    return parser


def listen(host, port):
    """A listening socket, or one line saying why not (taken before the model loads)."""
    if not 0 <= port <= 65535:
        raise TransfertransfoError(f"--port {port}: choose a port from 0 to 65535")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except socket.gaierror as err:
        raise TransfertransfoError(f"--host {host}: not an address of this machine ({err.strerror})")
    except OSError as err:
        sock.close()
        if err.errno == 98:  # EADDRINUSE
            raise TransfertransfoError(f"port {port} on {host} is already in use: stop what uses it or choose "
                                       "another with --port")
        raise TransfertransfoError(f"cannot listen on {host}:{port}: {err.strerror}")
    sock.set_inheritable(True)
    return sock


def model_id(opt):
    """The name clients pass as `model`: zoo:NAME gives NAME, a file its folder/name."""
    if opt.get("model_id"):
        return opt["model_id"]
    mf = os.path.abspath(opt["model_file"])
    zoo = os.path.abspath(os.path.join(opt.get("datapath") or "", "models"))
    if mf.startswith(zoo + os.sep):  # ParlAI has resolved zoo:NAME to {datapath}/models/NAME
        return os.path.relpath(mf, zoo)
    return os.path.join(os.path.basename(os.path.dirname(mf)), os.path.basename(mf))


def _listed(text):
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def load_agent(opt):
    from parlai.core.agents import create_agent

    from parlai_transfertransfo.agent.transfertransfo import TransfertransfoAgent

    agent = create_agent(opt, requireModelExists=True)
    if not isinstance(agent, TransfertransfoAgent):
        raise TransfertransfoError(
            f"{opt.get('model_file')} is a {type(agent).__name__} model: serve_transfertransfo serves "
            "transfertransfo models"
        )
    agent.model.eval()
    return agent


@register_script("serve_transfertransfo", hidden=False)
class ServeTransfertransfo(ParlaiScript):
    @classmethod
    def setup_args(cls):
        return setup_args()

    def run(self):
        try:
            import uvicorn

            from parlai_transfertransfo.serving import app as serving_app
        except ImportError as err:
            raise TransfertransfoError(f"serving needs the 'serve' extra ({err.name} is missing): ./install.sh serve")
        from parlai_transfertransfo.data import personas
        from parlai_transfertransfo.serving import off_main_thread
        from parlai_transfertransfo.serving.decoding import defaults_from_opt
        from parlai_transfertransfo.serving.openai_schema import Limits
        from parlai_transfertransfo.serving.scheduler import Scheduler

        opt = self.opt
        if not opt.get("model_file"):
            raise TransfertransfoError("serve_transfertransfo needs -mf MODEL_FILE (e.g. zoo:transfertransfo/smollm2_135m/model)")
        for name in ("max_sessions", "max_batch_rows", "max_queue", "max_body_bytes", "max_tokens_limit"):
            if opt[name] < 1:
                raise TransfertransfoError(f"--{name.replace('_', '-')} {opt[name]}: give a number of at least 1")
        if opt["session_rate_limit"] < 0:
            raise TransfertransfoError(f"--session-rate-limit {opt['session_rate_limit']}: give 0 (no limit) or more")
        sock = listen(opt["host"], opt["port"])
        scheduler = None
        try:
            agent = off_main_thread.call(load_agent, opt)  # the main thread keeps no OpenMP pool
            scheduler = Scheduler(agent, max_rows=opt["max_batch_rows"], max_queue=opt["max_queue"],
                                  max_context_tokens=opt["max_context_tokens"]).start()
            config = serving_app.ServeConfig(
                model_id=model_id(opt),
                defaults=defaults_from_opt(agent.opt),
                default_persona=list(agent.history.default_persona),
                new_persona=lambda: agent._chat_persona(opt.get("persona")),
                random_persona=lambda: personas.random_persona(agent.rng),
                limits=Limits(opt["max_message_chars"], opt["max_messages"], opt["max_tokens_limit"],
                              opt["max_batch_rows"]),
                suggestions=opt["suggestions"], api_key=opt.get("api_key"),
                max_body_bytes=opt["max_body_bytes"], session_ttl=opt["session_ttl"],
                max_sessions=opt["max_sessions"], session_rate_limit=opt["session_rate_limit"],
                cors_origins=_listed(opt["cors_origins"]),
            )
            app = serving_app.create_app(scheduler, config)
            host, port = sock.getsockname()[:2]
            url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
            print(f"serving {config.model_id} at {url}/ (chat page) and {url}/v1 (OpenAI-compatible API); "
                  "Ctrl-C stops", flush=True)
            # ws="none": the server streams over HTTP (server-sent events) and needs no
            # websockets; uvicorn's "auto" would import whichever `websockets` is installed,
            # and the crowd extra's Mephisto pins one (10.4) too old for uvicorn 0.54.
            forwarded = _listed(opt["forwarded_allow_ips"])
            server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3,
                                                   ws="none", proxy_headers=bool(forwarded),
                                                   forwarded_allow_ips=list(forwarded) or None))
            server.run(sockets=[sock])
        finally:
            sock.close()
            if scheduler is not None:
                scheduler.stop()
        return config.model_id


if __name__ == "__main__":
    ServeTransfertransfo.main()
