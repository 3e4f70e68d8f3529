"""Tasks streamed to a web page with FastAPI: the page submits three, then shows them live.

    pip install "reactive-tasks[web,emulator]" fastapi
    uvicorn --app-dir examples web_fastapi:app       # then open http://127.0.0.1:8000/
"""

import os
from contextlib import asynccontextmanager

from _scripted import coin_script, emulator
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from reactive_tasks.backends import CloudCoinBackend
from reactive_tasks.compose import merge_tasks
from reactive_tasks.web import EventStreamResponse, sse_response

PAGE = """<!doctype html><title>tasks</title><pre id="log"></pre><script>
const log = (line) => document.getElementById("log").textContent += line + "\\n";
fetch("tasks", {method: "POST"}).then(r => r.json()).then(ids => {
  const source = new EventSource("events?ids=" + ids.join(","));
  for (const kind of ["TASK_UPDATED", "TASK_COMPLETED", "TASK_FAILED"]) source.addEventListener(
    kind, m => { const e = JSON.parse(m.data); log(`${e.task_id} ${e.state} ${e.progress} %`); });
  source.addEventListener("complete", () => { source.close(); log("all ended"); });
});</script>"""


@asynccontextmanager
async def lifespan(app: FastAPI):  # the emulator at EMULATOR_URL, or one in-process
    with emulator(os.environ.get("EMULATOR_URL")) as emu:
        async with CloudCoinBackend(emu.api_url("cloudcoin")) as app.state.backend:
            app.state.submit = lambda fails: emu.create_task("cloudcoin", coin_script(
                [30, 60, 90], seconds=0.3, fails=fails))
            yield

app = FastAPI(lifespan=lifespan)
app.get("/", response_class=HTMLResponse)(lambda: PAGE)
app.post("/tasks")(lambda: [app.state.submit(fails=i == 2) for i in range(3)])
app.get("/events", response_class=EventStreamResponse)(lambda ids: sse_response(  # one stream
    merge_tasks(*(app.state.backend.observe(t) for t in ids.split(",")))))
