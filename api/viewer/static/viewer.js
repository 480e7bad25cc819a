// SpotOn viewer: camera tiles with tracked boxes, a floor map and a timeline.
//
// Data flow: REST gives the task, its media (cameras, chunks, frame counts) and
// identities; the WebSocket `/ws/tracking/{task}` replays then tails the task's
// `tracking_update` messages, which are buffered by frame_index. Each camera
// tile draws the boxes of the frame its video is *presenting* (from
// requestVideoFrameCallback metadata), so boxes never drift from the pixels.
// The playhead follows one "master" video; the other tiles are slaved to it.

const TRAIL_FRAMES = 50;          // map trail length (2 s at 25 fps)
const POSITION_PAGE = 250;        // frames of fused positions per request
const RECONNECT_BASE_MS = 500;
const RECONNECT_MAX_MS = 15000;
const LIVE_LAG_S = 1;             // live mode plays this far behind the newest result
const DRIFT_SEEK_FRAMES = 6;      // slave tiles further off than this are re-seeked
const TERMINAL = new Set(['COMPLETED', 'FAILED', 'CANCELLED']);

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const token = params.get('token') || localStorage.getItem('spoton.token') || '';
if (params.get('token')) localStorage.setItem('spoton.token', token);

// ------------------------------------------------------------------ helpers

/** Deterministic colour of a global id: same person, same colour, everywhere. */
export function colourFor(gid) {
  if (gid === null || gid === undefined) return 'hsl(0, 0%, 70%)';
  const s = String(gid);
  let n;
  if (/^\d+$/.test(s)) {
    n = Number(s);
  } else {
    n = 0x811c9dc5;                     // FNV-1a
    for (let i = 0; i < s.length; i++) { n ^= s.charCodeAt(i); n = Math.imul(n, 0x01000193) >>> 0; }
  }
  // golden-angle hues keep consecutive ids apart; three lightness bands separate
  // the ids whose hues still come close (1 and 6, 2 and 7, …)
  const hue = (n * 137.508) % 360;
  const light = [55, 72, 42][n % 3];
  return `hsl(${hue.toFixed(1)}, 85%, ${light}%)`;
}

function authHeaders() {
  return token ? { Authorization: `Bearer ${token}`, 'X-API-Key': token } : {};
}

function withToken(url) {
  if (!token) return url;
  return url + (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token);
}

async function api(path, options = {}) {
  const res = await fetch(path, {
    ...options, headers: { 'Content-Type': 'application/json', ...authHeaders(), ...(options.headers || {}) },
  });
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (!res.ok) {
    const detail = body && typeof body === 'object' ? (body.detail ?? body.message ?? text) : text;
    throw new Error(`${options.method || 'GET'} ${path}: ${res.status} ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`);
  }
  return body;
}

function asList(body, ...keys) {
  if (Array.isArray(body)) return body;
  for (const k of keys) if (body && Array.isArray(body[k])) return body[k];
  return [];
}

function pick(obj, ...keys) {
  for (const k of keys) if (obj && obj[k] !== undefined && obj[k] !== null) return obj[k];
  return null;
}

function fmtTime(frame, fps) {
  const t = frame / (fps || 25);
  const m = Math.floor(t / 60);
  return `${m}:${(t - m * 60).toFixed(1).padStart(4, '0')}`;
}

// ------------------------------------------------------------------ messages

const messages = new Map();

function notify(key, kind, text) {
  let el = messages.get(key);
  if (!text) { if (el) { el.remove(); messages.delete(key); } return; }
  if (!el) {
    el = document.createElement('div');
    el.dataset.key = key;
    const close = document.createElement('button');
    close.textContent = '×';
    close.title = 'dismiss';
    close.onclick = () => notify(key);
    el.append(document.createElement('span'), close);
    $('messages').append(el);
    messages.set(key, el);
  }
  el.className = `msg ${kind}`;
  el.firstChild.textContent = text;
}

// ------------------------------------------------------------------ frame buffer

/** Time spent drawing (ms), for the fps benchmark: boxes per tile and the map. */
const drawCost = { tiles: 0, tileDraws: 0, map: 0, mapDraws: 0 };

/** Tracking results by frame_index plus which frame ranges are known complete. */
class FrameBuffer {
  constructor() { this.clear(); }

  clear() {
    this.frames = new Map();      // frame_index -> {cameras: {cid: tracks[]}, fused: Map|null}
    this.coverage = [];           // sorted disjoint [from, to] ranges received in full
    this.maxFrame = -1;
  }

  add(payload, connFrom) {
    const f = payload.frame_index;
    const cams = {};
    for (const [cid, cam] of Object.entries(payload.cameras || {})) cams[cid] = cam.tracks || [];
    const prev = this.frames.get(f);
    // Several messages may carry one frame (e.g. one per camera): merge camera-wise.
    this.frames.set(f, { cameras: prev ? { ...prev.cameras, ...cams } : cams, fused: null });
    this.maxFrame = Math.max(this.maxFrame, f);
    this.cover(connFrom, f);
  }

  cover(from, to) {
    if (to < from) return;
    const out = [];
    let [a, b] = [from, to];
    for (const [x, y] of this.coverage) {
      if (y + 1 < a || x > b + 1) out.push([x, y]);
      else { a = Math.min(a, x); b = Math.max(b, y); }
    }
    out.push([a, b]);
    out.sort((p, q) => p[0] - q[0]);
    this.coverage = out;
  }

  covered(f) { return this.coverage.some(([a, b]) => f >= a && f <= b); }

  /** End of the covered range holding f, or -1. */
  coveredUntil(f) {
    for (const [a, b] of this.coverage) if (f >= a && f <= b) return b;
    return -1;
  }

  tracks(f, cid) {
    const rec = this.frames.get(f);
    return (rec && rec.cameras[cid]) || [];
  }

  /** Per identity, the mean map position over the cameras that see it at frame f. */
  positions(f) {
    const rec = this.frames.get(f);
    if (!rec) return new Map();
    if (rec.fused) return rec.fused;
    const acc = new Map();
    for (const [cid, tracks] of Object.entries(rec.cameras)) {
      for (const t of tracks) {
        const m = t.map_coords;
        if (!m || m.length < 2 || !Number.isFinite(m[0]) || !Number.isFinite(m[1])) continue;
        const key = t.global_id ?? `${cid}:${t.track_id}`;
        const a = acc.get(key) || { x: 0, y: 0, n: 0, global_id: t.global_id ?? null };
        a.x += m[0]; a.y += m[1]; a.n += 1;
        acc.set(key, a);
      }
    }
    const fused = new Map();
    for (const [k, a] of acc) fused.set(k, { global_id: a.global_id, x: a.x / a.n, y: a.y / a.n });
    rec.fused = fused;
    return fused;
  }
}

// ------------------------------------------------------------------ fused positions

/**
 * The engine's one floor position per identity and frame (`/positions`), in pages
 * around the playhead. The feed only carries each camera's own projection; the
 * map prefers the fused position and falls back to the cameras' mean.
 */
class PositionStore {
  constructor(viewer) {
    this.viewer = viewer;
    this.pages = new Map();   // page -> {frames: Map(frame -> Map(gid -> {x, y})), seen, complete, loading}
  }

  clear() { this.pages = new Map(); }

  /** Fused positions at frame f, or null while its page is not loaded. */
  at(f) {
    const p = this.pages.get(Math.floor(f / POSITION_PAGE));
    if (!p || !p.frames) return null;
    return p.frames.get(f) || new Map();
  }

  /** Load (or refresh) the pages of frame f and the next one. */
  want(f) {
    const k = Math.floor(f / POSITION_PAGE);
    this.load(k);
    this.load(k + 1);
  }

  load(k) {
    const v = this.viewer;
    const start = k * POSITION_PAGE;
    const end = start + POSITION_PAGE - 1;
    if (!v.taskId || start >= v.totalFrames) return;
    const p = this.pages.get(k);
    // Rows are stored before their frames stream: once the feed is past the page's
    // end (or the task is over) the page is final; until then refresh as frames arrive.
    if (p && (p.loading || p.complete || v.buffer.maxFrame <= p.seen || performance.now() - p.at < 1000)) return;
    const seen = v.buffer.maxFrame;
    const complete = seen >= end || v.terminal();
    const page = { frames: p ? p.frames : null, seen, complete: false, loading: true, at: performance.now() };
    this.pages.set(k, page);
    const task = v.taskId;
    api(`/viewer/api/tasks/${encodeURIComponent(task)}/positions?start=${start}&end=${end}`)
      .then((body) => {
        if (v.taskId !== task || this.pages.get(k) !== page) return;
        const frames = new Map();
        for (const [f, rows] of Object.entries(body.frames)) {
          frames.set(Number(f), new Map(rows.map(([gid, x, y]) => [String(gid), { x, y }])));
        }
        Object.assign(page, { frames, complete, loading: false });
        v.invalidate();
      })
      .catch((e) => {
        page.loading = false;
        notify('positions', 'warn', `cannot load floor positions: ${e.message}`);
      });
  }
}

// ------------------------------------------------------------------ WebSocket stream

/** One task's tracking stream: replay from a frame, live tail, auto-reconnect with backoff. */
class TrackingStream {
  constructor(taskId, { onTracking, onStatus, onState }) {
    this.taskId = taskId;
    this.onTracking = onTracking;
    this.onStatus = onStatus;
    this.onState = onState;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.connFrom = 0;
    this.lastFrame = -1;
    this.terminal = false;
  }

  open(fromFrame) {
    this.close();
    this.connFrom = Math.max(0, fromFrame | 0);
    this.lastFrame = this.connFrom - 1;
    this.connect();
  }

  connect() {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const q = new URLSearchParams({ from_frame: String(this.connFrom) });
    if (token) q.set('token', token);
    const ws = new WebSocket(`${proto}://${location.host}/ws/tracking/${encodeURIComponent(this.taskId)}?${q}`);
    this.ws = ws;
    this.onState('connecting', this.attempt ? `reconnecting (attempt ${this.attempt})…` : 'connecting…');
    ws.onopen = () => { this.attempt = 0; this.onState('open', null); };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg.type === 'tracking_update' && msg.payload) {
        this.lastFrame = Math.max(this.lastFrame, msg.payload.frame_index);
        this.onTracking(msg.payload, this.connFrom);
      } else if (msg.type === 'status_update' && msg.payload) {
        this.terminal = TERMINAL.has(msg.payload.status);
        this.onStatus(msg.payload);
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;   // superseded by open()/close()
      this.ws = null;
      if (ev.code >= 4000 && ev.code < 4500) {
        this.onState('refused', `the server refused the stream (${ev.code}${ev.reason ? ': ' + ev.reason : ''})`);
        return;
      }
      if (this.terminal && ev.code === 1000) { this.onState('done', null); return; }
      // Resume after the last frame we have: no gap, no duplicate replay.
      this.connFrom = Math.max(this.connFrom, this.lastFrame + 1);
      const delay = Math.min(RECONNECT_BASE_MS * 2 ** this.attempt, RECONNECT_MAX_MS) * (0.8 + 0.4 * Math.random());
      this.attempt += 1;
      this.onState('lost', `connection lost — reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${this.attempt})`);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  close() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, 'client closed');
    }
  }
}

// ------------------------------------------------------------------ camera tiles

/** One camera: video (or image sequence) with a canvas of boxes on top. */
class Tile {
  constructor(cam, viewer) {
    this.cam = cam;
    this.viewer = viewer;
    this.chunkIndex = -1;
    this.shownFrame = -1;      // global frame whose pixels are on screen
    this.drawnFrame = -1;
    this.boxes = [];
    this.rendered = 0;
    this.seekPending = false;
    this.captionAt = 0;
    this.isVideo = cam.chunks.length > 0 && cam.chunks.every((c) => c.kind === 'video');

    this.el = document.createElement('figure');
    this.el.className = 'tile';
    this.el.dataset.camera = cam.camera_id;
    this.stage = document.createElement('div');
    this.stage.className = 'stage';
    this.media = document.createElement(this.isVideo ? 'video' : 'img');
    if (this.isVideo) {
      Object.assign(this.media, { muted: true, playsInline: true, preload: 'auto', disablePictureInPicture: true });
      this.media.setAttribute('muted', '');
    }
    this.media.alt = cam.camera_id;
    this.canvas = document.createElement('canvas');
    this.note = document.createElement('div');
    this.note.className = 'note';
    this.stage.append(this.media, this.canvas, this.note);
    const cap = document.createElement('figcaption');
    this.caption = document.createElement('span');
    const name = document.createElement('b');
    name.textContent = cam.camera_id;
    cap.append(name, ' ', this.caption);
    this.el.append(this.stage, cap);
    this.ctx = this.canvas.getContext('2d');
    new ResizeObserver(() => this.resize()).observe(this.stage);

    if (this.isVideo) this.bindVideo();
    else this.media.addEventListener('load', () => this.onImage());
  }

  get fps() { const c = this.cam.chunks[Math.max(this.chunkIndex, 0)]; return (c && c.fps) || this.viewer.fps; }

  /** (chunk index, local frame) of a global frame, or null past this camera's end. */
  locate(g) {
    for (const c of this.cam.chunks) {
      if (g >= c.frame_offset && g < c.frame_offset + c.frames) return { chunk: c.index, local: g - c.frame_offset };
    }
    return null;
  }

  chunkUrl(i) { return withToken(`${this.viewer.mediaBase}/video/${encodeURIComponent(this.cam.camera_id)}/${i}`); }

  bindVideo() {
    const v = this.media;
    // mediaTime is the presented frame's timestamp k / fps: round it. currentTime
    // lies anywhere inside a frame's interval: floor it.
    const onFrame = (_now, meta) => {
      this.presented(Math.round(meta.mediaTime * this.fps), true);
      v.requestVideoFrameCallback(onFrame);
    };
    if ('requestVideoFrameCallback' in v) v.requestVideoFrameCallback(onFrame);
    else v.addEventListener('timeupdate', () => this.presented(Math.floor(v.currentTime * this.fps + 1e-3), true));
    v.addEventListener('seeked', () => { if (v.paused) this.presented(Math.floor(v.currentTime * this.fps + 1e-3), false); });
    v.addEventListener('loadedmetadata', () => { this.resize(); this.note.textContent = ''; });
    v.addEventListener('ended', () => this.viewer.player.onEnded(this));
    v.addEventListener('waiting', () => { this.note.textContent = 'buffering…'; });
    v.addEventListener('playing', () => { this.note.textContent = ''; });
    v.addEventListener('error', () => {
      const e = v.error;
      this.note.textContent = `video error${e ? ` (${e.code}${e.message ? ': ' + e.message : ''})` : ''}`;
      notify(`video-${this.cam.camera_id}`, 'error', `camera ${this.cam.camera_id}: cannot play chunk ${this.chunkIndex} — ${this.note.textContent}`);
    });
  }

  /** Local frame `local` of the current chunk reached the screen: draw its boxes. */
  presented(local, count) {
    const chunk = this.cam.chunks[this.chunkIndex];
    if (!chunk || this.media.seeking) return;
    if (local >= chunk.frames && !this.media.paused) {
      // past the frames the task processed (max_frames): this chunk ends here
      this.media.pause();
      this.viewer.player.onEnded(this);
      return;
    }
    this.shownFrame = chunk.frame_offset + Math.min(Math.max(local, 0), chunk.frames - 1);
    this.seekPending = false;
    if (count) this.rendered += 1;
    this.draw();
  }

  load(chunkIndex) {
    if (chunkIndex === this.chunkIndex) return;
    this.chunkIndex = chunkIndex;
    notify(`video-${this.cam.camera_id}`);
    if (this.isVideo) {
      this.media.src = this.chunkUrl(chunkIndex);
      this.media.playbackRate = this.viewer.player.speed;
    }
  }

  /** Show global frame g (paused or as a playback resync). */
  seekTo(g) {
    const at = this.locate(g);
    if (!at) {
      this.note.textContent = 'no video at this time';
      if (this.isVideo) this.media.pause();
      this.shownFrame = -1;
      this.clear();
      return;
    }
    this.load(at.chunk);
    if (this.note.textContent === 'no video at this time') this.note.textContent = '';
    if (this.isVideo) {
      const chunk = this.cam.chunks[at.chunk];
      // Until the new frame is presented the old pixels (and their boxes) stay
      // on screen, but this tile cannot lead the playhead.
      this.seekPending = true;
      // mid-frame time: lands on frame `local` whatever the float rounding
      this.media.currentTime = (at.local + 0.5) / chunk.fps;
    } else {
      this.showImage(at.chunk, at.local);
    }
  }

  showImage(chunk, local) {
    const url = withToken(`${this.viewer.mediaBase}/image/${encodeURIComponent(this.cam.camera_id)}/${chunk}/${local}`);
    this.pending = { chunk, local };
    if (this.media.dataset.src !== url) { this.media.dataset.src = url; this.media.src = url; }
  }

  onImage() {
    if (!this.pending) return;
    const c = this.cam.chunks[this.pending.chunk];
    this.chunkIndex = this.pending.chunk;
    this.shownFrame = c.frame_offset + this.pending.local;
    this.rendered += 1;
    this.resize();
    this.draw();
  }

  play(speed) {
    if (!this.isVideo) return;
    this.media.playbackRate = speed;
    if (this.media.paused && !this.media.ended && this.locate(this.viewer.player.frame)) this.media.play().catch(() => {});
  }

  pause() { if (this.isVideo) this.media.pause(); }

  intrinsicSize() {
    const m = this.media;
    const w = this.isVideo ? m.videoWidth : m.naturalWidth;
    const h = this.isVideo ? m.videoHeight : m.naturalHeight;
    const c = this.cam.chunks[Math.max(this.chunkIndex, 0)] || {};
    return [w || c.width || 1, h || c.height || 1];
  }

  resize() {
    const r = this.stage.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(r.width * dpr));
    const h = Math.max(1, Math.round(r.height * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.cssW = r.width;
    this.cssH = r.height;
    this.drawnFrame = -1;
    this.draw();
  }

  /** Content rectangle of the media inside the stage (object-fit: contain). */
  contentRect() {
    const [iw, ih] = this.intrinsicSize();
    const s = Math.min(this.cssW / iw, this.cssH / ih);
    return { s, ox: (this.cssW - iw * s) / 2, oy: (this.cssH - ih * s) / 2 };
  }

  clear() {
    this.ctx.setTransform(1, 0, 0, 1, 0, 0);
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.boxes = [];
  }

  draw() {
    if (!this.cssW) return;
    const t0 = performance.now();
    const f = this.shownFrame;
    this.clear();
    if (f < 0) { this.caption.textContent = ''; return; }
    const ctx = this.ctx;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const { s, ox, oy } = this.contentRect();
    const selected = this.viewer.selected;
    const tracks = this.viewer.buffer.tracks(f, this.cam.camera_id);
    ctx.font = '600 12px system-ui, sans-serif';
    ctx.textBaseline = 'bottom';
    for (const t of tracks) {
      const [x1, y1, x2, y2] = t.bbox_xyxy;
      const box = {
        global_id: t.global_id ?? null, track_id: t.track_id, frame: f,
        x1: ox + x1 * s, y1: oy + y1 * s, x2: ox + x2 * s, y2: oy + y2 * s,
        src: [x1, y1, x2, y2],
        highlighted: selected !== null && String(t.global_id) === selected,
      };
      const colour = colourFor(t.global_id);
      const dim = selected !== null && !box.highlighted;
      ctx.globalAlpha = dim ? 0.35 : 1;
      ctx.strokeStyle = colour;
      ctx.lineWidth = box.highlighted ? 4 : 2;
      ctx.strokeRect(box.x1, box.y1, box.x2 - box.x1, box.y2 - box.y1);
      const label = t.global_id !== null && t.global_id !== undefined ? `#${t.global_id}` : `t${t.track_id}`;
      const tw = ctx.measureText(label).width + 6;
      ctx.fillStyle = colour;
      ctx.fillRect(box.x1 - (ctx.lineWidth / 2), box.y1 - 15, tw, 15);
      ctx.fillStyle = '#111';
      ctx.fillText(label, box.x1 + 3 - (ctx.lineWidth / 2), box.y1 - 2);
      this.boxes.push(box);
    }
    ctx.globalAlpha = 1;
    this.drawnFrame = f;
    drawCost.tiles += performance.now() - t0;
    drawCost.tileDraws += 1;
    // the caption is text layout: a few updates a second are plenty while playing
    const now = performance.now();
    if (this.media.paused || now - this.captionAt > 250) {
      this.captionAt = now;
      const chunk = this.cam.chunks[this.chunkIndex];
      this.caption.textContent = `${chunk ? chunk.name : ''} · frame ${f} · ${tracks.length} ${tracks.length === 1 ? 'person' : 'people'}`;
    }
  }
}

// ------------------------------------------------------------------ playback

/** Playhead: follows a master video; slaves other tiles to it; holds for live results. */
class Player {
  constructor(viewer) {
    this.viewer = viewer;
    this.frame = 0;
    this.playing = false;
    this.speed = 1;
    this.holding = false;
    this.lastTick = performance.now();
    this.lastLiveJump = 0;
    this.ticks = 0;            // animation frames the page got (benchmark: the rendering rate)
    requestAnimationFrame((t) => this.tick(t));
  }

  get total() { return this.viewer.totalFrames; }

  master() {
    const g = Math.floor(this.frame);
    return this.viewer.tiles.find((t) => {
      if (!t.isVideo || t.seekPending || t.media.seeking || t.shownFrame < 0) return false;
      const at = t.locate(g);
      return at !== null && at.chunk === t.chunkIndex;
    }) || null;
  }

  seek(g, { reconnect = true } = {}) {
    g = Math.max(0, Math.min(Math.round(g), Math.max(this.total - 1, 0)));
    this.frame = g;
    for (const t of this.viewer.tiles) t.seekTo(g);
    if (reconnect) this.viewer.ensureData(g);
    if (this.playing && !this.holding) for (const t of this.viewer.tiles) t.play(this.speed);
    this.viewer.render();
  }

  play() {
    if (this.frame >= this.total - 1) this.seek(0);
    this.playing = true;
    this.viewer.ensureData(this.frame);
    for (const t of this.viewer.tiles) t.play(this.speed);
    this.viewer.updateControls();
  }

  pause() {
    this.playing = false;
    this.holding = false;
    notify('hold');
    for (const t of this.viewer.tiles) t.pause();
    this.viewer.updateControls();
  }

  setSpeed(s) {
    this.speed = s;
    for (const t of this.viewer.tiles) if (t.isVideo) t.media.playbackRate = s;
  }

  onEnded(tile) {
    if (!this.playing) return;
    const chunk = tile.cam.chunks[tile.chunkIndex];
    if (!chunk) return;
    const next = chunk.frame_offset + chunk.frames;
    const m = this.master();
    if (m && m !== tile && !m.media.ended) return;  // the master's own end moves everyone on
    if (next >= this.total) { this.frame = this.total - 1; this.pause(); this.viewer.render(); return; }
    this.seek(next);
  }

  /** Frames whose results are still to come (running task, playhead past the data). */
  mustHold() {
    const v = this.viewer;
    if (v.terminal()) return false;
    const until = v.buffer.coveredUntil(this.frame);
    return until < this.frame + 1;
  }

  tick(now) {
    this.ticks += 1;
    const dt = Math.min((now - this.lastTick) / 1000, 0.25);
    this.lastTick = now;
    const v = this.viewer;
    if (this.playing && v.tiles.length) {
      if (v.live) this.followLive(now);
      const hold = this.mustHold();
      if (hold !== this.holding) {
        this.holding = hold;
        for (const t of v.tiles) { if (hold) t.pause(); else t.play(this.speed); }
        notify('hold', 'info', hold ? `waiting for results at frame ${this.frame}…` : null);
      }
      if (!hold) {
        const m = this.master();
        const g = Math.floor(this.frame);
        if (m && m.media.ended) {
          // an end that came while holding (or while another tile led) was not acted on
          this.onEnded(m);
        } else if (m) {
          this.frame = m.shownFrame;
        } else if (!v.tiles.some((t) => t.isVideo && t.locate(g))) {
          // image sequences only (or past every video): a plain clock drives the playhead
          this.frame = Math.min(this.frame + dt * v.fps * this.speed, this.total - 1);
          if (this.frame >= this.total - 1) this.pause();
        }
        this.syncSlaves(m);
      }
    }
    v.render();
    requestAnimationFrame((t) => this.tick(t));
  }

  followLive(now) {
    const v = this.viewer;
    const tail = v.buffer.maxFrame;
    if (tail < 0 || now - this.lastLiveJump < 2000) return;
    const target = Math.max(0, tail - Math.round(LIVE_LAG_S * v.fps));
    if (Math.abs(target - this.frame) > 3 * v.fps) {
      this.lastLiveJump = now;
      this.seek(target);
    }
  }

  syncSlaves(master) {
    const g = Math.floor(this.frame);
    for (const t of this.viewer.tiles) {
      if (t === master) continue;
      const at = t.locate(g);
      if (!t.isVideo) {
        if (at && t.shownFrame !== g) t.showImage(at.chunk, at.local);
        continue;
      }
      if (!at) { if (!t.media.paused) t.seekTo(g); continue; }
      if (t.seekPending || t.media.seeking || t.media.ended || t.media.readyState < 2) continue;
      if (t.chunkIndex !== at.chunk) { t.seekTo(g); t.play(this.speed); continue; }
      if (t.media.paused) t.play(this.speed);
      const cur = t.media.currentTime * t.fps;
      const drift = cur - (at.local + 0.5);
      if (Math.abs(drift) > DRIFT_SEEK_FRAMES) t.seekTo(g);
      else if (Math.abs(drift) > 1) t.media.playbackRate = this.speed * (drift > 0 ? 0.9 : 1.1);
      else if (t.media.playbackRate !== this.speed) t.media.playbackRate = this.speed;
    }
  }
}

// ------------------------------------------------------------------ floor map

class FloorMap {
  constructor(canvas, viewer) {
    this.canvas = canvas;
    this.viewer = viewer;
    this.ctx = canvas.getContext('2d');
    this.dots = [];
    this.drawnFrame = -1;
    this.base = null;
    new ResizeObserver(() => { this.base = null; this.drawnFrame = -1; }).observe(canvas);
  }

  layout() {
    const media = this.viewer.media;
    const r = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const W = Math.max(1, r.width), H = Math.max(1, r.height);
    if (this.canvas.width !== Math.round(W * dpr) || this.canvas.height !== Math.round(H * dpr)) {
      this.canvas.width = Math.round(W * dpr);
      this.canvas.height = Math.round(H * dpr);
    }
    // The view holds the floor and every camera standing off it.
    let [x0, y0, x1, y1] = [0, 0, media ? media.plane.width_m : 1, media ? media.plane.height_m : 1];
    for (const cam of (media ? media.cameras : [])) {
      if (!cam.position_m) continue;
      x0 = Math.min(x0, cam.position_m[0]); x1 = Math.max(x1, cam.position_m[0]);
      y0 = Math.min(y0, cam.position_m[1]); y1 = Math.max(y1, cam.position_m[1]);
    }
    const pad = 18;
    const s = Math.min((W - 2 * pad) / (x1 - x0), (H - 2 * pad) / (y1 - y0));
    this.t = { s, ox: (W - (x1 - x0) * s) / 2 - x0 * s, oy: (H - (y1 - y0) * s) / 2 - y0 * s, W, H, dpr };
  }

  toPx(x, y) { return [this.t.ox + x * this.t.s, this.t.oy + y * this.t.s]; }

  /** Static layer: floor outline, metre grid, camera positions and fields of view. */
  drawBase() {
    this.layout();
    const { W, H, dpr } = this.t;
    const base = document.createElement('canvas');
    base.width = this.canvas.width;
    base.height = this.canvas.height;
    const ctx = base.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = '#15181d';
    ctx.fillRect(0, 0, W, H);
    const media = this.viewer.media;
    if (!media) { this.base = base; return; }
    const { width_m: pw, height_m: ph } = media.plane;
    const step = pw > 60 || ph > 60 ? 10 : pw > 15 || ph > 15 ? 5 : 1;
    ctx.strokeStyle = '#262b33';
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let x = 0; x <= pw + 1e-6; x += 1) { const [a, b] = this.toPx(x, 0); const [, d] = this.toPx(x, ph); ctx.moveTo(a, b); ctx.lineTo(a, d); }
    for (let y = 0; y <= ph + 1e-6; y += 1) { const [a, b] = this.toPx(0, y); const [c] = this.toPx(pw, y); ctx.moveTo(a, b); ctx.lineTo(c, b); }
    ctx.stroke();
    ctx.fillStyle = '#6b7380';
    ctx.font = '10px system-ui, sans-serif';
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (let x = 0; x <= pw + 1e-6; x += step) { const [a, b] = this.toPx(x, ph); ctx.fillText(`${x}`, a, b + 2); }
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let y = 0; y <= ph + 1e-6; y += step) { const [a, b] = this.toPx(0, y); ctx.fillText(`${y}`, a - 3, b); }
    ctx.strokeStyle = '#9aa4b2';
    ctx.lineWidth = 1.5;
    const [x0, y0] = this.toPx(0, 0);
    ctx.strokeRect(x0, y0, pw * this.t.s, ph * this.t.s);
    ctx.textAlign = 'center';
    ctx.textBaseline = 'bottom';
    for (const cam of media.cameras) {
      if (cam.fov_m && cam.fov_m.length >= 3) {
        ctx.beginPath();
        cam.fov_m.forEach(([x, y], i) => { const [a, b] = this.toPx(x, y); i ? ctx.lineTo(a, b) : ctx.moveTo(a, b); });
        ctx.closePath();
        ctx.fillStyle = 'rgba(120, 160, 255, 0.07)';
        ctx.fill();
        ctx.strokeStyle = 'rgba(120, 160, 255, 0.35)';
        ctx.lineWidth = 1;
        ctx.stroke();
      }
      if (cam.position_m) {
        const [a, b] = this.toPx(cam.position_m[0], cam.position_m[1]);
        ctx.fillStyle = '#8fb3ff';
        ctx.beginPath();
        ctx.moveTo(a, b - 6); ctx.lineTo(a + 5, b + 4); ctx.lineTo(a - 5, b + 4); ctx.closePath();
        ctx.fill();
        ctx.fillText(cam.camera_id, a, b - 7);
      } else if (cam.fov_m && cam.fov_m.length) {
        const cx = cam.fov_m.reduce((s, p) => s + p[0], 0) / cam.fov_m.length;
        const cy = cam.fov_m.reduce((s, p) => s + p[1], 0) / cam.fov_m.length;
        const [a, b] = this.toPx(cx, cy);
        ctx.fillStyle = 'rgba(143, 179, 255, 0.6)';
        ctx.fillText(cam.camera_id, a, b);
      }
    }
    this.base = base;
  }

  draw(frame) {
    const t0 = performance.now();
    const f = Math.floor(frame);
    if (!this.base) this.drawBase();
    const ctx = this.ctx;
    const { dpr } = this.t;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(this.base, 0, 0);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const v = this.viewer;
    const sel = v.selected;

    if (sel !== null && v.trajectory && v.trajectory.global_id === sel && v.trajectory.points.length > 1) {
      ctx.strokeStyle = colourFor(sel);
      ctx.globalAlpha = 0.8;
      ctx.lineWidth = 2;
      ctx.setLineDash([5, 4]);
      ctx.beginPath();
      v.trajectory.points.forEach(([x, y], i) => { const [a, b] = this.toPx(x, y); i ? ctx.lineTo(a, b) : ctx.moveTo(a, b); });
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.globalAlpha = 1;
    }

    // Fading trails: one segment per frame step, older = fainter.
    const trails = new Map();
    for (let k = Math.max(0, f - TRAIL_FRAMES); k <= f; k++) {
      for (const [key, p] of v.floorPositions(k)) {
        if (p.global_id === null) continue;
        let tr = trails.get(key);
        if (!tr) { tr = []; trails.set(key, tr); }
        tr.push([k, p.x, p.y]);
      }
    }
    ctx.lineWidth = 2;
    for (const [key, tr] of trails) {
      ctx.strokeStyle = colourFor(key);
      for (let i = 1; i < tr.length; i++) {
        if (tr[i][0] - tr[i - 1][0] > 5) continue;
        ctx.globalAlpha = (sel !== null && key !== sel ? 0.25 : 0.9) * (1 - (f - tr[i][0]) / TRAIL_FRAMES);
        const [a, b] = this.toPx(tr[i - 1][1], tr[i - 1][2]);
        const [c, d] = this.toPx(tr[i][1], tr[i][2]);
        ctx.beginPath(); ctx.moveTo(a, b); ctx.lineTo(c, d); ctx.stroke();
      }
    }
    ctx.globalAlpha = 1;

    this.dots = [];
    ctx.font = '600 11px system-ui, sans-serif';
    ctx.textAlign = 'left';
    ctx.textBaseline = 'middle';
    for (const [key, p] of v.floorPositions(f)) {
      const gid = p.global_id === null ? null : String(p.global_id);
      const [a, b] = this.toPx(p.x, p.y);
      const hl = sel !== null && gid === sel;
      ctx.globalAlpha = sel !== null && !hl ? 0.4 : 1;
      ctx.fillStyle = colourFor(gid);
      ctx.beginPath();
      ctx.arc(a, b, hl ? 7 : gid === null ? 3 : 5, 0, 2 * Math.PI);
      ctx.fill();
      if (hl) { ctx.strokeStyle = '#fff'; ctx.lineWidth = 2; ctx.stroke(); }
      if (gid !== null) ctx.fillText(gid, a + 8, b);
      this.dots.push({ key, global_id: gid, x: p.x, y: p.y, source: p.source, px: a, py: b, highlighted: hl });
    }
    ctx.globalAlpha = 1;
    this.drawnFrame = f;
    drawCost.map += performance.now() - t0;
    drawCost.mapDraws += 1;
  }
}

// ------------------------------------------------------------------ the viewer

class Viewer {
  constructor() {
    this.taskId = null;
    this.media = null;
    this.mediaBase = '';
    this.fps = 25;
    this.totalFrames = 0;
    this.tiles = [];
    this.buffer = new FrameBuffer();
    this.positions = new PositionStore(this);
    this.stream = null;
    this.status = null;
    this.identities = [];
    this.selected = null;
    this.trajectory = null;
    this.live = false;
    this.connection = 'idle';
    this.renderedFrame = -1;
    this.mapFrame = -1;
    this.player = new Player(this);
    this.map = new FloorMap($('map'), this);
    this.identityTimer = null;
    this.bindUi();
  }

  terminal() { return this.status !== null && TERMINAL.has(this.status.status); }

  bindUi() {
    $('start-form').addEventListener('submit', (e) => { e.preventDefault(); this.startTask($('env-select').value); });
    $('open-form').addEventListener('submit', (e) => { e.preventDefault(); if ($('task-select').value) this.open($('task-select').value); });
    $('play-btn').addEventListener('click', () => (this.player.playing ? this.player.pause() : this.player.play()));
    $('speed-select').addEventListener('change', (e) => this.player.setSpeed(Number(e.target.value)));
    const scrub = $('scrub');
    scrub.addEventListener('input', () => { this.setLive(false); this.player.seek(Number(scrub.value), { reconnect: false }); });
    scrub.addEventListener('change', () => this.player.seek(Number(scrub.value)));
    $('live-toggle').addEventListener('change', (e) => this.setLive(e.target.checked));
    window.addEventListener('keydown', (e) => {
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
      if (e.code === 'Space') { e.preventDefault(); $('play-btn').click(); }
      if (e.code === 'ArrowRight') this.player.seek(this.player.frame + (e.shiftKey ? this.fps : 1));
      if (e.code === 'ArrowLeft') this.player.seek(this.player.frame - (e.shiftKey ? this.fps : 1));
      if (e.code === 'Escape') this.select(null);
    });
    window.addEventListener('popstate', () => {
      const id = new URLSearchParams(location.search).get('task');
      if (id && id !== this.taskId) this.open(id, { push: false });
    });
  }

  async init() {
    const [envs, tasks] = await Promise.allSettled([
      api('/api/v1/environments'), api('/api/v1/processing-tasks'),
    ]);
    if (envs.status === 'fulfilled') this.fillEnvironments(envs.value);
    else notify('envs', 'error', `cannot list environments: ${envs.reason.message}`);
    if (tasks.status === 'fulfilled') this.fillTasks(tasks.value);
    else notify('tasks', 'error', `cannot list tasks: ${tasks.reason.message}`);
    const id = params.get('task');
    if (id) await this.open(id, { push: false });
  }

  fillEnvironments(body) {
    const sel = $('env-select');
    sel.innerHTML = '';
    for (const e of asList(body, 'data', 'environments', 'items')) {
      const id = typeof e === 'string' ? e : pick(e, 'environment_id', 'id', 'name');
      const o = document.createElement('option');
      o.value = id;
      const n = e && Array.isArray(e.cameras) ? ` · ${e.cameras.length} cameras` : '';
      o.textContent = `${id}${n}`;
      o.title = (e && e.description) || '';
      sel.append(o);
    }
    if (!sel.options.length) sel.innerHTML = '<option value="">no environments</option>';
  }

  fillTasks(body) {
    const sel = $('task-select');
    const keep = sel.value;
    sel.innerHTML = '<option value="">—</option>';
    for (const t of asList(body, 'data', 'tasks', 'items')) {
      const id = pick(t, 'task_id', 'id');
      const o = document.createElement('option');
      o.value = id;
      const when = pick(t, 'created_at', 'started_at');
      o.textContent = `${pick(t, 'environment_id') || '?'} · ${pick(t, 'status') || ''} · ${String(id).slice(0, 8)}${when ? ' · ' + String(when).slice(0, 16).replace('T', ' ') : ''}`;
      sel.append(o);
    }
    if (keep) sel.value = keep;
  }

  async refreshTasks() {
    try { this.fillTasks(await api('/api/v1/processing-tasks')); notify('tasks'); } catch (e) { notify('tasks', 'error', `cannot list tasks: ${e.message}`); }
  }

  async startTask(envId) {
    if (!envId) return;
    $('start-btn').disabled = true;
    try {
      const res = await api('/api/v1/processing-tasks/start', { method: 'POST', body: JSON.stringify({ environment_id: envId }) });
      notify('start', 'info', `task ${res.task_id} started for ${envId}`);
      await this.refreshTasks();
      await this.open(res.task_id, { live: true });
    } catch (e) {
      notify('start', 'error', `cannot start a task: ${e.message}`);
    } finally {
      $('start-btn').disabled = false;
    }
  }

  async open(taskId, { push = true, live = null } = {}) {
    this.close();
    this.taskId = taskId;
    $('task-label').textContent = `task ${taskId}`;
    $('task-select').value = taskId;
    if (push) history.pushState(null, '', `/viewer?task=${encodeURIComponent(taskId)}`);
    const base = `/api/v1/processing-tasks/${encodeURIComponent(taskId)}`;
    const [status, media] = await Promise.allSettled([
      api(`${base}/status`), api(`/viewer/api/tasks/${encodeURIComponent(taskId)}/media`),
    ]);
    if (this.taskId !== taskId) return;
    if (media.status === 'rejected') {
      notify('open', 'error', `cannot open task ${taskId}: ${media.reason.message}`);
      return;
    }
    notify('open');
    if (status.status === 'fulfilled') this.onStatus(status.value);
    else notify('status', 'warn', `status unavailable (${status.reason.message}); following the live feed`);
    this.setMedia(taskId, media.value);
    this.stream = new TrackingStream(taskId, {
      onTracking: (p, from) => this.onTracking(p, from),
      onStatus: (p) => this.onStatus(p),
      onState: (s, text) => this.onConnection(s, text),
    });
    this.stream.terminal = this.terminal();
    this.stream.open(0);
    this.refreshIdentities();
    this.setLive(live ?? (this.status !== null && !this.terminal()));
    this.player.seek(0, { reconnect: false });
    this.player.play();
  }

  close() {
    if (this.stream) this.stream.close();
    this.stream = null;
    clearTimeout(this.identityTimer);
    this.player.pause();
    this.buffer.clear();
    this.positions.clear();
    this.tiles = [];
    $('tiles').innerHTML = '';
    this.identities = [];
    this.selected = null;
    this.trajectory = null;
    this.status = null;
    this.media = null;
    this.map.base = null;
    for (const k of [...messages.keys()]) if (k !== 'envs' && k !== 'tasks') notify(k);
  }

  setMedia(taskId, media) {
    this.media = media;
    this.mediaBase = `/viewer/api/tasks/${encodeURIComponent(taskId)}`;
    this.fps = media.fps || 25;
    this.totalFrames = media.total_frames;
    $('scrub').max = String(Math.max(0, media.total_frames - 1));
    $('map-size').textContent = `${media.plane.width_m} × ${media.plane.height_m} m`;
    const root = $('tiles');
    root.dataset.count = String(media.cameras.length);
    this.tiles = media.cameras.map((cam) => new Tile(cam, this));
    for (const t of this.tiles) {
      root.append(t.el);
      if (!t.cam.chunks.length) t.note.textContent = 'no video found for this camera';
    }
    this.map.base = null;
  }

  /** Make sure results around frame g are (being) streamed; replay from g if not. */
  ensureData(g) {
    if (!this.stream) return;
    const f = Math.floor(g);
    if (this.buffer.covered(f)) return;
    // An open feed that started before f delivers it in order; reopen only when
    // that would mean waiting for a long replay first.
    const s = this.stream;
    if (s.ws && s.connFrom <= f && f <= s.lastFrame + 5 * this.fps) return;
    s.open(f);
  }

  onTracking(payload, connFrom) {
    this.buffer.add(payload, connFrom);
    for (const t of this.tiles) if (t.shownFrame === payload.frame_index) t.drawnFrame = -1;
    if (Math.floor(this.player.frame) === payload.frame_index) this.mapFrame = -1;
  }

  onStatus(p) {
    const was = this.status && this.status.status;
    this.status = p;
    notify('status');
    if (this.stream) this.stream.terminal = TERMINAL.has(p.status);
    const el = $('task-status');
    el.textContent = p.status;
    el.dataset.status = p.status;
    $('progress-bar').style.width = `${Math.max(0, Math.min(100, p.progress || 0))}%`;
    $('task-step').textContent = p.current_step || '';
    if (p.status === 'FAILED') notify('task', 'error', `task failed${p.details ? ': ' + p.details : ''}`);
    else if (p.status === 'CANCELLED') notify('task', 'warn', 'task was cancelled');
    else notify('task');
    if (was && was !== p.status && TERMINAL.has(p.status)) { this.refreshIdentities(); this.refreshTasks(); }
    if (TERMINAL.has(p.status)) this.setLive(false);
  }

  onConnection(state, text) {
    this.connection = state;
    const el = $('conn-state');
    el.dataset.state = state;
    el.textContent = { connecting: 'feed: connecting', open: 'feed: live', lost: 'feed: reconnecting', refused: 'feed: refused', done: 'feed: replayed' }[state] || state;
    notify('conn', state === 'refused' ? 'error' : 'warn', state === 'lost' || state === 'refused' ? text : null);
  }

  setLive(on) {
    this.live = !!on && !this.terminal();
    $('live-toggle').checked = this.live;
    $('live-toggle').disabled = this.terminal();
  }

  async refreshIdentities() {
    clearTimeout(this.identityTimer);
    const id = this.taskId;
    if (!id) return;
    try {
      const body = await api(`/api/v1/processing-tasks/${encodeURIComponent(id)}/identities`);
      if (this.taskId !== id) return;
      this.identities = asList(body, 'data', 'identities', 'items').map((it) => ({
        global_id: String(pick(it, 'global_id', 'id')),
        first: pick(it, 'first_seen_frame', 'first_frame', 'first_seen'),
        last: pick(it, 'last_seen_frame', 'last_frame', 'last_seen'),
        cameras: pick(it, 'cameras', 'camera_ids') || [],
      }));
      this.renderIdentities();
      notify('identities');
    } catch (e) {
      notify('identities', 'warn', `cannot load people: ${e.message}`);
    }
    if (!this.terminal()) this.identityTimer = setTimeout(() => this.refreshIdentities(), 5000);
  }

  renderIdentities() {
    const ul = $('identity-list');
    ul.innerHTML = '';
    $('people-count').textContent = `(${this.identities.length})`;
    for (const it of this.identities) {
      const li = document.createElement('li');
      li.dataset.globalId = it.global_id;
      li.className = it.global_id === this.selected ? 'selected' : '';
      const sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = colourFor(it.global_id);
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = `#${it.global_id}`;
      const info = document.createElement('span');
      info.className = 'muted';
      const span = it.first !== null ? `${fmtTime(it.first, this.fps)}–${fmtTime(it.last ?? it.first, this.fps)}` : '';
      info.textContent = `${span} · ${Array.isArray(it.cameras) ? it.cameras.join(' ') : it.cameras}`;
      info.title = it.first !== null ? `frames ${it.first}–${it.last}` : '';
      const go = document.createElement('button');
      go.type = 'button';
      go.className = 'go';
      go.textContent = '▶';
      go.title = 'jump to first appearance';
      go.onclick = (e) => { e.stopPropagation(); if (it.first !== null) { this.setLive(false); this.player.seek(it.first); } };
      li.append(sw, name, info, go);
      li.onclick = () => this.select(this.selected === it.global_id ? null : it.global_id);
      ul.append(li);
    }
  }

  async select(gid) {
    this.selected = gid === null || gid === undefined ? null : String(gid);
    this.trajectory = null;
    for (const li of $('identity-list').children) li.classList.toggle('selected', li.dataset.globalId === this.selected);
    this.invalidate();
    if (this.selected === null) return;
    const want = this.selected;
    try {
      const body = await api(`/api/v1/processing-tasks/${encodeURIComponent(this.taskId)}/identities/${encodeURIComponent(want)}`);
      if (this.selected !== want) return;
      const pts = asList(body, 'trajectory', 'points', 'positions')
        .map((p) => (Array.isArray(p) ? [p[p.length - 2], p[p.length - 1]] : p.map_coords || [pick(p, 'map_x', 'x'), pick(p, 'map_y', 'y')]))
        .filter((p) => p && Number.isFinite(p[0]) && Number.isFinite(p[1]));
      this.trajectory = { global_id: want, points: pts };
      notify('trajectory');
    } catch (e) {
      notify('trajectory', 'warn', `cannot load trajectory of #${want}: ${e.message}`);
    }
    this.invalidate();
  }

  /** Per identity at frame f: the fused position when stored, else the cameras' mean. */
  floorPositions(f) {
    const mean = this.buffer.positions(f);
    const fused = this.positions.at(f);
    const out = new Map();
    for (const [key, p] of mean) {
      const q = fused && p.global_id !== null ? fused.get(String(p.global_id)) : undefined;
      out.set(key, q ? { global_id: p.global_id, x: q.x, y: q.y, source: 'fused' } : { ...p, source: 'cameras' });
    }
    if (fused) for (const [gid, q] of fused) if (!out.has(gid)) out.set(gid, { global_id: gid, x: q.x, y: q.y, source: 'fused' });
    return out;
  }

  invalidate() {
    for (const t of this.tiles) t.drawnFrame = -1;
    this.mapFrame = -1;
  }

  updateControls() {
    $('play-btn').textContent = this.player.playing ? '❚❚' : '▶';
  }

  /** Per animation frame: redraw whatever went stale (tiles also redraw per video frame). */
  render() {
    const f = Math.floor(this.player.frame);
    for (const t of this.tiles) if (t.drawnFrame !== t.shownFrame) t.draw();
    if (this.media) this.positions.want(f);
    if (this.mapFrame !== f || !this.map.base) { this.map.draw(f); this.mapFrame = f; }
    if (this.renderedFrame !== f) {
      $('scrub').value = String(f);
      $('frame-label').textContent = `${f} / ${Math.max(this.totalFrames - 1, 0)} · ${fmtTime(f, this.fps)}`;
      this.renderedFrame = f;
    }
  }
}

// ------------------------------------------------------------------ boot + test hook

const viewer = new Viewer();

window.spotonViewer = {
  viewer,
  ready: () => viewer.media !== null && viewer.tiles.length > 0,
  taskId: () => viewer.taskId,
  currentFrame: () => Math.floor(viewer.player.frame),
  playing: () => viewer.player.playing,
  status: () => viewer.status,
  connection: () => viewer.connection,
  coverage: () => viewer.buffer.coverage.map((r) => [...r]),
  bufferedFrames: () => viewer.buffer.frames.size,
  tileFrames: () => Object.fromEntries(viewer.tiles.map((t) => [t.cam.camera_id, t.shownFrame])),
  videoTimes: () => Object.fromEntries(viewer.tiles.map((t) => [t.cam.camera_id, t.isVideo ? t.media.currentTime : null])),
  boxes: () => Object.fromEntries(viewer.tiles.map((t) => [t.cam.camera_id, t.boxes.map((b) => ({ ...b }))])),
  mapDots: () => viewer.map.dots.map((d) => ({ ...d })),
  mapFrame: () => viewer.map.drawnFrame,
  fusedLoaded: (f) => viewer.positions.at(f) !== null,
  renderedFrames: () => viewer.tiles.reduce((s, t) => s + t.rendered, 0),
  drawCost: () => ({ ...drawCost }),
  animationFrames: () => viewer.player.ticks,
  /** Per camera, the browser's own count of decoded and dropped video frames. */
  videoQuality: () => Object.fromEntries(viewer.tiles.filter((t) => t.isVideo).map((t) => {
    const q = t.media.getVideoPlaybackQuality();
    return [t.cam.camera_id, { total: q.totalVideoFrames, dropped: q.droppedVideoFrames }];
  })),
  renderedPerCamera: () => Object.fromEntries(viewer.tiles.map((t) => [t.cam.camera_id, t.rendered])),
  selected: () => viewer.selected,
  identities: () => viewer.identities.map((i) => ({ ...i })),
  trajectory: () => viewer.trajectory,
  colourFor,
  /** PNG data URL of the pixels a tile shows, at the media's own size. */
  frameImage: (cid) => {
    const t = viewer.tiles.find((x) => x.cam.camera_id === cid);
    const [w, h] = t.intrinsicSize();
    const c = document.createElement('canvas');
    c.width = w;
    c.height = h;
    c.getContext('2d').drawImage(t.media, 0, 0, w, h);
    return c.toDataURL('image/png');
  },
  open: (id) => viewer.open(id),
  select: (gid) => viewer.select(gid),
  seek: (f) => viewer.player.seek(f),
  play: () => viewer.player.play(),
  pause: () => viewer.player.pause(),
  setSpeed: (s) => { $('speed-select').value = String(s); viewer.player.setSpeed(s); },
};

viewer.init().catch((e) => notify('init', 'error', `viewer failed to start: ${e.message}`));
