// The page of `ddim-edit serve`: upload a photo, describe it, describe the edit, run, look,
// adjust, run again. Everything goes through the JSON API in ../openapi.json.

interface Info {
  model: string; device: string; dtype: string; width: number; height: number;
  defaults: { steps: number; guidance: number; inversion_guidance: number; attention: string; inversion: string };
  inversions: string[];
  limits: { max_upload_bytes: number; max_pixels: number; max_queue: number };
}

interface Status {
  id: string; image: string; state: "queued" | "running" | "done" | "failed" | "cancelled";
  position: number | null; phase: string | null; step: number; total: number; fraction: number;
  elapsed_s: number; eta_s: number | null; inversion_reused: boolean; unet_calls: number;
  unet_calls_saved: number; preview: number; error: string | null; command: string;
  settings: Record<string, unknown>;
}

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el as T;
};
const input = (id: string) => $<HTMLInputElement>(id);

let photoId: string | null = null;
let running: string | null = null;
let maxUpload = Infinity;
const edits: { status: Status; url: string }[] = [];

function showError(message: string | null): void {
  const el = $("error");
  el.hidden = message === null;
  el.textContent = message ?? "";
}

async function apiError(resp: Response): Promise<string> {
  try {
    const body = await resp.json();
    return body.error ?? `${resp.status} ${resp.statusText}`;
  } catch {
    return `${resp.status} ${resp.statusText}`;
  }
}

async function loadInfo(): Promise<void> {
  const info: Info = await (await fetch("/api/info")).json();
  $("model").textContent = `${info.model} · ${info.width}×${info.height} · ${info.device} ${info.dtype}`;
  input("steps").value = String(info.defaults.steps);
  input("guidance").value = String(info.defaults.guidance);
  input("inversion-guidance").value = String(info.defaults.inversion_guidance);
  maxUpload = info.limits.max_upload_bytes;
  const select = $<HTMLSelectElement>("inversion");
  for (const name of info.inversions) select.add(new Option(name, name));
  document.documentElement.style.setProperty("--aspect", `${info.width} / ${info.height}`);
  defaultInversion = info.defaults.inversion;
  $<HTMLSelectElement>("attention").value = info.defaults.attention;
  syncMethod();
}

let defaultInversion = "direct";

// The method's defaults, as `ddim-edit edit` takes them: with Prompt-to-Prompt, direct inversion
// from step 0; a plain prompt swap, DDIM inversion from 30 % of the steps.
function syncMethod(): void {
  const p2p = $<HTMLSelectElement>("attention").value === "p2p";
  $("p2p").hidden = !p2p;
  $<HTMLSelectElement>("inversion").value = p2p ? defaultInversion : "ddim";
  const steps = Math.max(1, Number(input("steps").value) || 1);
  syncStart(p2p ? 0 : Math.floor((steps * 3) / 10));
}

function syncStart(value?: number): void {
  const steps = Math.max(1, Number(input("steps").value) || 1);
  const start = input("start-step");
  start.max = String(steps - 1);
  if (value !== undefined) start.value = String(value);
  $("start-out").textContent = `${start.value} of ${steps}`;
}

async function upload(body: Blob | string, name: string): Promise<void> {
  showError(null);
  // The server refuses larger bodies before reading them, which a browser may report only as a
  // dropped connection: say it here.
  if (typeof body !== "string" && body.size > maxUpload) {
    const mib = (n: number) => (n / (1 << 20)).toFixed(1);
    showError(`${name} is ${mib(body.size)} MiB, larger than the ${mib(maxUpload)} MiB the server accepts`);
    return;
  }
  const resp = typeof body === "string"
    ? await fetch("/api/images/from-url", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ url: body }) })
    : await fetch(`/api/images?name=${encodeURIComponent(name)}`, { method: "POST", body });
  if (!resp.ok) {
    showError(await apiError(resp));
    return;
  }
  const up = await resp.json();
  photoId = up.id;
  const img = $<HTMLImageElement>("photo");
  img.src = up.url;
  img.hidden = false;
  $("drop-hint").hidden = true;
  $<HTMLImageElement>("before").src = up.url;
  edits.length = 0;
  renderHistory(null);
  $("compare").hidden = true;
  $<HTMLButtonElement>("run").disabled = false;
}

function words(text: string): string[] {
  return text.split(/[\s,]+/).filter((w) => w.length > 0);
}

function request(): Record<string, unknown> {
  const num = (id: string) => Number(input(id).value);
  const body: Record<string, unknown> = {
    image: photoId, prompt: input("prompt").value, edit_prompt: input("edit-prompt").value,
    steps: num("steps"), start_step: num("start-step"), guidance: num("guidance"),
    inversion_guidance: num("inversion-guidance"), negative_prompt: input("negative-prompt").value,
    inversion: $<HTMLSelectElement>("inversion").value, attention: $<HTMLSelectElement>("attention").value,
  };
  if (body.attention === "p2p") {
    body.cross_replace = num("cross-replace");
    body.self_replace = num("self-replace");
    body.reweight = words(input("reweight").value).map((w) => {
      const [word, factor] = w.split("=");
      return { word, factor: Number(factor) };
    });
    body.blend_words = words(input("blend-words").value);
    body.feature_replace = num("feature-replace");
    body.blend_auto = input("blend-auto").checked;
  }
  return body;
}

function describe(s: Status): string {
  switch (s.state) {
    case "queued": return `queued: ${s.position ?? 0} job(s) ahead`;
    case "running": {
      const eta = s.eta_s === null ? "" : ` · about ${Math.ceil(s.eta_s)} s left`;
      return `${s.phase ?? "starting"} ${s.step}/${s.total}${eta}`;
    }
    case "done": return `done in ${s.elapsed_s.toFixed(1)} s`;
    case "cancelled": return "cancelled";
    case "failed": return `failed: ${s.error ?? ""}`;
  }
}

function onStatus(s: Status): void {
  $<HTMLProgressElement>("bar").value = s.fraction;
  $("progress-text").textContent = describe(s);
  if (s.preview > 0 && s.state === "running") {
    const p = $<HTMLImageElement>("preview");
    p.src = `/api/jobs/${s.id}/preview.png?v=${s.preview}`;
    p.hidden = false;
  }
}

function finish(s: Status): void {
  running = null;
  $<HTMLButtonElement>("run").disabled = false;
  $("cancel").hidden = true;
  $("preview").hidden = true;
  if (s.state === "failed") showError(s.error);
  if (s.state !== "done") return;
  const url = `/api/jobs/${s.id}/result.png`;
  edits.push({ status: s, url });
  show(edits.length - 1);
}

function show(index: number): void {
  const { status, url } = edits[index];
  $<HTMLImageElement>("after").src = url;
  $("compare").hidden = false;
  const a = $<HTMLAnchorElement>("download");
  a.href = url;
  a.hidden = false;
  $("details").hidden = false;
  $("command").textContent = status.command;
  $("reuse").textContent = status.inversion_reused
    ? `inversion reused: ${status.unet_calls} UNet calls, ${status.unet_calls_saved} saved`
    : `${status.unet_calls} UNet calls`;
  renderHistory(index);
}

function renderHistory(current: number | null): void {
  const list = $("history");
  list.replaceChildren(...edits.map((h, i) => {
    const li = document.createElement("li");
    li.className = i === current ? "current" : "";
    li.title = h.status.command;
    const img = document.createElement("img");
    img.src = h.url;
    img.alt = String(h.status.settings.edit_prompt ?? "");
    const label = document.createElement("span");
    label.textContent = String(h.status.settings.edit_prompt ?? "");
    li.append(img, label);
    li.addEventListener("click", () => show(i));
    return li;
  }));
}

async function run(): Promise<void> {
  showError(null);
  const resp = await fetch("/api/jobs", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(request()) });
  if (!resp.ok) {
    showError(await apiError(resp));
    return;
  }
  const s: Status = await resp.json();
  running = s.id;
  $<HTMLButtonElement>("run").disabled = true;
  $("cancel").hidden = false;
  $("progress").hidden = false;
  onStatus(s);
  const events = new EventSource(`/api/jobs/${s.id}/events`);
  events.addEventListener("status", (e) => {
    const st: Status = JSON.parse((e as MessageEvent).data);
    onStatus(st);
    if (["done", "failed", "cancelled"].includes(st.state)) {
      events.close();
      finish(st);
    }
  });
}

function fileOf(items: DataTransferItemList | null): File | null {
  for (const item of Array.from(items ?? [])) {
    const f = item.kind === "file" ? item.getAsFile() : null;
    if (f) return f;
  }
  return null;
}

function wire(): void {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = fileOf(e.dataTransfer?.items ?? null);
    if (f) void upload(f, f.name);
  });
  document.addEventListener("paste", (e) => {
    const f = fileOf(e.clipboardData?.items ?? null);
    if (f) void upload(f, f.name || "pasted.png");
  });
  input("file").addEventListener("change", () => {
    const f = input("file").files?.[0];
    if (f) void upload(f, f.name);
  });
  $("url-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const url = input("url").value.trim();
    if (url) void upload(url, url.split("/").pop() || "photo.png");
  });
  input("steps").addEventListener("input", () => syncStart());
  input("start-step").addEventListener("input", () => syncStart());
  $("attention").addEventListener("change", () => syncMethod());
  $("run").addEventListener("click", () => void run());
  $("cancel").addEventListener("click", () => {
    if (running) void fetch(`/api/jobs/${running}/cancel`, { method: "POST" });
  });
  input("slider").addEventListener("input", () => {
    $("compare").style.setProperty("--cut", `${input("slider").value}%`);
  });
  $("copy").addEventListener("click", () => void navigator.clipboard?.writeText($("command").textContent ?? ""));
}

wire();
void loadInfo();
export {};
