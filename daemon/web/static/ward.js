// wardd ward page: renders the ward from server-sent events, shows a lost connection at
// once, reconnects by itself, acknowledges alerts and sounds them (WebAudio, once the user
// has enabled sound). Plain JavaScript, no build step.
// The bed page (/bed/<id>, page-data.bed) runs the same script: it shows that bed's tile
// only, prepends that bed's transitions to its timeline, and sounds the whole ward as the
// ward page does (a nurse looking at one bed still hears the others).
// Every text comes from the page (page-data.strings), in the user's language.
"use strict";

(function () {
  const page = JSON.parse(document.getElementById("page-data").textContent);
  const S = page.strings;
  const ward = document.getElementById("ward");
  const wardOwn = document.getElementById("ward-own");
  const banner = document.getElementById("banner");
  const bannerAge = document.getElementById("banner-age");
  const statusEl = document.getElementById("status");
  const notice = document.getElementById("notice");
  const recent = document.getElementById("recent");
  const timeline = document.getElementById("timeline");
  const only = page.bed || null; // the bed page's bed: {ward, bed, tile}
  // A stream silent for three pings is dead even if no error came (a cable pulled).
  const STALE_MS = (page.ping_s || 2) * 3 * 1000;
  const RECONNECT_MIN_MS = 500;
  const RECONNECT_MAX_MS = 5000;
  const VITALS = ["temp_c", "sbp_mmhg", "map_mmhg", "hr_per_min", "spo2_pct", "rr_per_min"];
  const DECIMALS = { temp_c: 1 };

  let source = null;
  let lastMessage = 0; // Date.now() of the last message of the stream
  let lastData = 0; // Date.now() of the last ward data shown
  let skewMs = 0; // server clock minus browser clock (the daemon's clock may be simulated)
  let retryMs = RECONNECT_MIN_MS;
  let retryTimer = null;
  let connected = false;
  let everLive = false; // a snapshot came once: a later one follows a lost connection
  const tiles = new Map(); // bed key -> {el, json}

  ward.dataset.stale = S.stale;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function serverNow() {
    return Date.now() + skewMs;
  }

  function duration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + " " + S.unit_s;
    if (s < 3600) return Math.floor(s / 60) + " " + S.unit_min;
    if (s < 86400) {
      const h = Math.floor(s / 3600);
      const m = Math.floor((s % 3600) / 60);
      return h + " " + S.unit_h + (m ? " " + m + " " + S.unit_min : "");
    }
    return Math.floor(s / 86400) + " " + S.unit_d + " " + Math.floor((s % 86400) / 3600) + " " + S.unit_h;
  }

  function number(value, decimals) {
    return Number(value).toLocaleString(page.lang, {
      minimumFractionDigits: decimals,
      maximumFractionDigits: decimals,
    });
  }

  // ---- connection state

  function setLive() {
    connected = true;
    retryMs = RECONNECT_MIN_MS;
    banner.hidden = true;
    document.body.classList.remove("stale", "connecting");
    statusEl.textContent = S.live;
    statusEl.className = "status live";
  }

  function setLost() {
    if (!connected && !document.body.classList.contains("connecting")) return;
    connected = false;
    banner.hidden = false;
    document.body.classList.remove("connecting");
    document.body.classList.add("stale");
    statusEl.textContent = S.stale;
    statusEl.className = "status lost";
    updateBannerAge();
  }

  function updateBannerAge() {
    bannerAge.textContent = lastData ? "(" + S.last_update + S.colon + duration(Date.now() - lastData) + ")" : "";
  }

  function lose() {
    setLost();
    if (source) {
      source.close();
      source = null;
    }
    if (!retryTimer) {
      retryTimer = setTimeout(probe, retryMs);
      retryMs = Math.min(retryMs * 2, RECONNECT_MAX_MS);
    }
  }

  // Before reconnecting: is the daemon back, and is the login still valid?
  function probe() {
    retryTimer = null;
    fetch("/api/ward", { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) {
          window.location.assign("/login?expired=1");
          return;
        }
        if (!response.ok) throw new Error(String(response.status));
        connect();
      })
      .catch(lose);
  }

  function connect() {
    source = new EventSource("/events");
    lastMessage = Date.now();
    function handler(fn) {
      return function (event) {
        lastMessage = Date.now();
        const data = JSON.parse(event.data);
        if (data.now) skewMs = Date.parse(data.now) - Date.now();
        fn(data);
      };
    }
    source.addEventListener("snapshot", handler(function (data) {
      // The bed page catches up on what it missed while the connection was lost (its
      // timeline and journal come from the store) by loading itself again.
      if (only && everLive) {
        window.location.reload();
        return;
      }
      everLive = true;
      setLive();
      render(data);
    }));
    source.addEventListener("ward", handler(render));
    source.addEventListener("alert", handler(transition));
    source.addEventListener("ping", handler(function () { if (!connected) setLive(); }));
    source.addEventListener("logout", function () { window.location.assign("/login?expired=1"); });
    // The browser would retry on its own, blind to an expired login: we do it ourselves.
    source.onerror = lose;
  }

  setInterval(function () {
    if (source && Date.now() - lastMessage > STALE_MS) lose();
    if (!connected) updateBannerAge();
    refreshTimes();
    if (paused()) showSound();
  }, 1000);

  // ---- rendering

  function isOnly(item) {
    return only !== null && item.ward === only.ward && item.bed === only.bed;
  }

  function renderWardOwn(wards) {
    // The wards' own alerts (the database or broker lost): one for every bed of the ward.
    const shown = (wards || []).filter(function (w) { return !only || w.ward === only.ward; });
    wardOwn.hidden = !shown.length;
    wardOwn.replaceChildren();
    shown.forEach(function (w) {
      const list = el("ul", "alerts");
      w.alerts.forEach(function (alert) { list.append(renderAlert(alert)); });
      wardOwn.append(el("h2", null, S.ward_own + " " + w.ward), list);
    });
  }

  function render(data) {
    lastData = Date.now();
    hear(data.beds);
    if (wardOwn) renderWardOwn(data.wards);
    const seen = new Set();
    const beds = only ? data.beds.filter(isOnly) : data.beds;
    if (!beds.length) {
      ward.replaceChildren(el("p", "empty", S.no_beds));
      return;
    }
    beds.forEach(function (bed, i) {
      const key = bed.ward + "/" + bed.bed;
      seen.add(key);
      const urgent = i === 0 && bed.level !== null;
      const json = JSON.stringify(bed) + urgent;
      let tile = tiles.get(key);
      if (!tile || tile.json !== json) {
        const node = renderBed(bed, urgent);
        if (tile) tile.el.replaceWith(node);
        tile = { el: node, json: json };
        tiles.set(key, tile);
      }
      // Keep the DOM in the server's order: the most urgent bed first.
      if (ward.children[i] !== tile.el) ward.insertBefore(tile.el, ward.children[i] || null);
    });
    tiles.forEach(function (tile, key) {
      if (!seen.has(key)) {
        tile.el.remove();
        tiles.delete(key);
      }
    });
    refreshTimes();
  }

  function renderBed(bed, urgent) {
    const tile = el("article", "tile" + (bed.level ? " level-" + bed.level : "") + (urgent ? " urgent" : ""));
    tile.dataset.bed = bed.bed;
    tile.dataset.ward = bed.ward;
    const head = el("div", "bed-head");
    const link = el("a", "bed-id", bed.ward + "/" + bed.bed);
    link.href = "/bed/" + encodeURIComponent(bed.bed);
    link.title = S.open_bed;
    head.append(link, el("span", "patient", bed.patient));
    tile.append(head);

    let day;
    if (bed.day === 0) day = S.starts + " " + new Date(bed.protocol_start).toLocaleString(page.lang);
    else if (bed.next_step === null) day = S.ended;
    else day = S.day + " " + bed.day;
    const protocol = el("p", "line protocol");
    protocol.append(el("b", null, bed.protocol), document.createTextNode(" · " + day));
    tile.append(protocol);

    const dose = el("p", "line dose");
    const delivered = bed.delivered_ug_per_day === null ? S.unknown : number(bed.delivered_ug_per_day, 1);
    dose.append(
      document.createTextNode(S.delivered + " "),
      el("b", "delivered", delivered),
      document.createTextNode(" / " + S.expected + " "),
      el("b", "expected", number(bed.expected_ug_per_day, 1)),
      document.createTextNode(" " + S.per_day)
    );
    tile.append(dose);

    if (bed.next_step) {
      const next = el("p", "line next");
      const what = bed.next_step.ug_per_day > 0 ? number(bed.next_step.ug_per_day, 1) + " " + S.per_day : S.end_of_protocol;
      const when = el("span", "until");
      when.dataset.until = bed.next_step.at;
      next.append(document.createTextNode(S.next_step + S.colon), el("b", null, what), document.createTextNode(" " + S.in + " "), when);
      tile.append(next);
    }

    const vitals = el("div", "vitals");
    const shown = VITALS.filter(function (m) { return bed.vitals[m] !== undefined; });
    if (!shown.length) vitals.append(el("span", "empty", S.no_vitals));
    shown.forEach(function (m) {
      const item = el("span", "v-" + m);
      item.append(document.createTextNode(S[m] + " "), el("b", null, number(bed.vitals[m], DECIMALS[m] || 0)));
      const line = bed.trend && bed.trend[m] ? sparkline(bed.trend[m], bed.trend_s) : null;
      if (line) item.append(line);
      vitals.append(item);
    });
    if (bed.news2) {
      const score = bed.news2.score;
      const badge = el("span", "news2" + (score >= 7 ? " n7" : score >= 5 ? " n5" : ""),
        S.news2 + " " + score + (bed.news2.partial ? " (" + S.partial + ")" : ""));
      vitals.append(badge);
    }
    tile.append(vitals);

    const list = el("ul", "alerts");
    if (!bed.alerts.length) list.append(el("li", "empty", S.no_alerts));
    bed.alerts.forEach(function (alert) { list.append(renderAlert(alert)); });
    tile.append(list);
    return tile;
  }

  // A tile's trend: the means the daemon sends (oldest first, null where nothing came), as
  // a small line scaled to its own range; a gap stays a gap.
  const SVG_NS = "http://www.w3.org/2000/svg";
  const SPARK_W = 48;
  const SPARK_H = 14;
  function sparkline(values, spanS) {
    const known = values.filter(function (v) { return v !== null; });
    if (known.length < 2) return null;
    const low = Math.min.apply(null, known);
    const high = Math.max.apply(null, known);
    const range = high - low || 1;
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 " + SPARK_W + " " + SPARK_H);
    svg.setAttribute("role", "img");
    const hours = Math.round(spanS / 3600);
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = S.trend + " " + hours + " " + S.unit_h + S.colon + number(low, 1) + " – " + number(high, 1);
    svg.append(title);
    svg.setAttribute("aria-label", title.textContent);
    let run = [];
    const step = SPARK_W / Math.max(values.length - 1, 1);
    function flush() {
      if (run.length > 1) {
        const poly = document.createElementNS(SVG_NS, "polyline");
        poly.setAttribute("points", run.join(" "));
        svg.append(poly);
      }
      run = [];
    }
    values.forEach(function (v, i) {
      if (v === null) { flush(); return; }
      const y = 1 + (SPARK_H - 2) * (high - v) / range;
      run.push((i * step).toFixed(1) + "," + y.toFixed(1));
    });
    flush();
    svg.dataset.points = String(known.length);
    return svg;
  }

  function renderAlert(alert) {
    const item = el("li", "alert p-" + alert.priority + " s-" + alert.state);
    item.dataset.alertId = alert.id;
    item.dataset.state = alert.state;
    if (page.can_ack && alert.state !== "acknowledged") {
      const button = el("button", "ack", S.acknowledge);
      button.type = "button";
      button.addEventListener("click", function () { acknowledge(alert.id, button); });
      item.append(button);
    }
    item.append(el("span", "prio", S["priority_" + alert.priority]), el("span", "cond", alert.condition));
    item.append(el("p", "msg", alert.message));
    const meta = el("p", "meta");
    const since = el("span", "since");
    since.dataset.since = alert.since;
    meta.append(
      el("span", "state", S["state_" + alert.state] || alert.state),
      document.createTextNode(" · " + S.since + " "),
      since
    );
    if (alert.escalation_level > 0) meta.append(document.createTextNode(" · " + S.escalation + " " + alert.escalation_level));
    if (alert.acked_by) {
      meta.append(document.createTextNode(" · " + S.acked_by + " " + (alert.acked_name || alert.acked_by)));
    }
    item.append(meta);
    return item;
  }

  function refreshTimes() {
    const now = serverNow();
    document.querySelectorAll("[data-since]").forEach(function (node) {
      node.textContent = duration(now - Date.parse(node.dataset.since));
    });
    document.querySelectorAll("[data-until]").forEach(function (node) {
      node.textContent = duration(Date.parse(node.dataset.until) - now);
    });
  }

  function localTimes() {
    document.querySelectorAll("time[datetime]").forEach(function (node) {
      const at = Date.parse(node.getAttribute("datetime"));
      if (!Number.isNaN(at)) node.textContent = new Date(at).toLocaleString(page.lang);
    });
    // The charts' clock ticks come in UTC (daemon/web/charts.py): shown in the browser's zone,
    // and the axis says which zone that is.
    document.querySelectorAll("svg text[data-at]").forEach(function (node) {
      const at = Date.parse(node.getAttribute("data-at"));
      if (Number.isNaN(at)) return;
      const withDay = node.textContent.indexOf("/") >= 0;
      // 24-hour clock times: short enough for an axis whatever the language.
      const options = withDay
        ? { day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23" }
        : { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
      node.textContent = new Date(at).toLocaleString(page.lang, options);
    });
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone) document.querySelectorAll("svg text[data-tz]").forEach(function (node) { node.textContent = zone; });
  }

  // The bed page's charts are drawn by the daemon; while the page is live they are fetched
  // again every minute, so that a bed view left open never shows hours-old curves.
  // window.wardCharts tells tests how often that happened.
  const CHARTS_EVERY_MS = 60000;
  const wardCharts = { refreshed: 0, refresh: refreshCharts };
  window.wardCharts = wardCharts;
  function refreshCharts() {
    const box = document.getElementById("charts");
    if (!only || !box || !connected) return Promise.resolve();
    const url = "/bed/" + encodeURIComponent(only.bed) + "/charts" + window.location.search;
    return fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) {
          window.location.assign("/login?expired=1");
          return null;
        }
        if (!response.ok) throw new Error(String(response.status));
        return response.text();
      })
      .then(function (text) {
        if (text === null) return;
        const holder = document.createElement("template");
        holder.innerHTML = text;
        const fresh = holder.content.querySelector("#charts");
        if (!fresh) return;
        document.getElementById("charts").replaceWith(fresh);
        localTimes();
        wardCharts.refreshed += 1;
      })
      .catch(function () { /* kept as they were; the "as of" time says how old they are */ });
  }
  if (only) setInterval(refreshCharts, CHARTS_EVERY_MS);

  // One line of the bed's timeline, as the server writes them (daemon/web/bedpage.py).
  function timelineLine(data) {
    const line = el("li", "t p-" + data.priority);
    line.dataset.alertId = data.id;
    line.dataset.phase = data.phase;
    line.dataset.state = data.state;
    const at = el("time", null, new Date(data.at).toLocaleString(page.lang));
    at.setAttribute("datetime", data.at);
    line.append(
      at,
      document.createTextNode(" "),
      el("span", "prio", S["priority_" + data.priority] || data.priority),
      document.createTextNode(" "),
      el("span", "cond", data.condition),
      document.createTextNode(" · "),
      el("span", "phase", S["phase_" + data.phase] || data.phase),
      document.createTextNode(" · "),
      el("span", "state", S["state_" + data.state] || data.state)
    );
    if (data.acked_by) {
      const who = data.acked_name ? data.acked_name + " (" + data.acked_by + ")" : data.acked_by;
      line.append(document.createTextNode(" · "), el("span", "acked", S.acked_by + " " + who));
    }
    return line;
  }

  function transition(data) {
    if (timeline && isOnly(data)) {
      timeline.querySelectorAll("li.empty").forEach(function (node) { node.remove(); });
      timeline.prepend(timelineLine(data));
    }
    if (!recent) return;
    const line = el("li", "p-" + data.priority);
    const at = new Date(data.at).toLocaleTimeString(page.lang);
    // A ward's own alert stands at "_<ward>" (daemon/ids.py): shown as the ward alone.
    const where = data.bed.charAt(0) === "_" ? data.ward : data.ward + "/" + data.bed;
    line.textContent = at + " " + where + " " + S["priority_" + data.priority] + " " +
      data.condition + " " + (S["phase_" + data.phase] || data.phase) + " — " + data.message;
    recent.prepend(line);
    while (recent.children.length > 8) recent.lastElementChild.remove();
  }

  // ---- acknowledgement

  function acknowledge(id, button) {
    button.disabled = true;
    fetch("/api/alerts/" + encodeURIComponent(id) + "/ack", {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": page.csrf },
    })
      .then(function (response) {
        if (response.status === 401) {
          window.location.assign("/login?expired=1");
          return;
        }
        if (!response.ok) {
          return response.json().then(function (body) {
            show(S.ack_refused + " (" + (body.error || body.reason) + ")");
            button.disabled = false;
          });
        }
        notice.hidden = true; // the new state arrives with the stream
      })
      .catch(function () {
        show(S.ack_failed);
        button.disabled = false;
      });
  }

  function show(text) {
    notice.textContent = text;
    notice.hidden = false;
  }

  // ---- sound: IEC 60601-1-8 pulse patterns (shared/domain.md section 4)
  // Only the most urgent active or latched, unacknowledged alert of the ward sounds: high a
  // burst of 10 pulses (two groups of 5), medium 3 pulses, low 1 pulse when the site turns
  // it on. A burst repeats every <priority>_repeat_s while it lasts; a higher priority or a
  // new alert at the sounding priority is heard at once. Timings and tone are [web.sound]
  // (site choices). Nothing plays before the user presses "Enable sound" (browsers refuse
  // audio without a user gesture), nor while audio is paused; acknowledging silences.
  const SOUND = page.sound;
  const PULSES = { high: 10, medium: 3, low: 1 };
  const RANK = { low: 1, medium: 2, high: 3 };
  const GROUP = 5; // a high burst: two groups of 5 pulses
  const PLAYED_KEPT = 200;
  const soundState = document.getElementById("sound-state");
  const soundEnable = document.getElementById("sound-enable");
  const audioPause = document.getElementById("audio-pause");
  const played = []; // what was scheduled: {priority, pulses, at, alerts}, for tests and diagnosis
  let audio = null; // the AudioContext, made on the user's click
  let wanted = null; // {priority, ids} that should sound, from the last ward data
  let sounding = null; // what the last burst announced
  let repeatTimer = null;
  let pausedUntil = 0; // Date.now() at which "audio paused" ends; 0: not paused
  let pauseTimer = null;
  let voices = []; // oscillators scheduled and not over yet

  function paused() {
    return pausedUntil > 0;
  }

  function hear(beds) {
    let best = null;
    beds.forEach(function (bed) {
      bed.alerts.forEach(function (alert) {
        if (alert.state !== "active" && alert.state !== "latched") return;
        if (!(alert.priority in PULSES) || (alert.priority === "low" && !SOUND.low_sounds)) return;
        if (!best || RANK[alert.priority] > RANK[best.priority]) best = { priority: alert.priority, ids: new Set() };
        if (alert.priority === best.priority) best.ids.add(alert.id);
      });
    });
    wanted = best;
    decide();
  }

  function decide() {
    if (!audio || paused()) return;
    if (!wanted) {
      silence();
      sounding = null;
      return;
    }
    const fresh = !sounding || sounding.priority !== wanted.priority ||
      Array.from(wanted.ids).some(function (id) { return !sounding.ids.has(id); });
    sounding = wanted;
    if (fresh) {
      silence();
      burst();
    }
  }

  function burst() {
    const priority = wanted.priority;
    const pulses = PULSES[priority];
    let t = audio.currentTime + 0.05;
    for (let i = 0; i < pulses; i++) {
      if (i > 0) t += i === GROUP ? SOUND.high_group_gap_s : SOUND.pulse_gap_s;
      pulse(t);
      t += SOUND.pulse_s;
    }
    played.push({ priority: priority, pulses: pulses, at: Date.now(), alerts: Array.from(wanted.ids) });
    if (played.length > PLAYED_KEPT) played.shift();
    clearTimeout(repeatTimer);
    repeatTimer = setTimeout(function () {
      repeatTimer = null;
      if (audio && !paused() && wanted) burst();
    }, SOUND[priority + "_repeat_s"] * 1000);
  }

  // One pulse: an oscillator on the AudioContext's clock, with short ramps (no clicks).
  function pulse(at) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    const ramp = Math.min(0.01, SOUND.pulse_s / 4);
    osc.frequency.value = SOUND.tone_hz;
    gain.gain.setValueAtTime(0, at);
    gain.gain.linearRampToValueAtTime(0.5, at + ramp);
    gain.gain.setValueAtTime(0.5, at + SOUND.pulse_s - ramp);
    gain.gain.linearRampToValueAtTime(0, at + SOUND.pulse_s);
    osc.connect(gain).connect(audio.destination);
    osc.onended = function () { voices = voices.filter(function (v) { return v !== osc; }); };
    osc.start(at);
    osc.stop(at + SOUND.pulse_s);
    voices.push(osc);
  }

  function silence() {
    clearTimeout(repeatTimer);
    repeatTimer = null;
    voices.forEach(function (osc) {
      try { osc.stop(); } catch (e) { /* already over */ }
    });
    voices = [];
  }

  function showSound() {
    let text = S.sound_off;
    let state = "off";
    if (audio && paused()) {
      const left = Math.max(0, Math.ceil((pausedUntil - Date.now()) / 1000));
      text = S.audio_paused + " " + Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0");
      state = "paused";
    } else if (audio) {
      text = S.sound_on;
      state = "on";
    }
    soundState.textContent = text;
    soundState.className = "sound-state " + state;
    audioPause.textContent = paused() ? S.audio_resume : S.audio_pause;
  }

  soundEnable.addEventListener("click", function () {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) {
      soundState.textContent = S.sound_unavailable;
      return;
    }
    audio = new Context();
    audio.resume(); // within the click: the browser lets it start
    soundEnable.hidden = true;
    audioPause.hidden = false;
    showSound();
    decide(); // what sounds now is heard at once
  });

  // "Audio paused": a temporary inactivation, apart from acknowledgement (the alerts stay
  // active and unacknowledged). It holds for audio_paused_s whatever starts meanwhile, then
  // sound resumes by itself; pressing again resumes it earlier.
  function endPause() {
    clearTimeout(pauseTimer);
    pauseTimer = null;
    pausedUntil = 0;
    showSound();
    decide();
  }

  audioPause.addEventListener("click", function () {
    if (paused()) {
      endPause();
      return;
    }
    pausedUntil = Date.now() + SOUND.audio_paused_s * 1000;
    silence();
    sounding = null; // at the end of the pause, what sounds then is heard at once
    pauseTimer = setTimeout(endPause, SOUND.audio_paused_s * 1000);
    showSound();
  });

  // Read-only, for tests and diagnosis: what was scheduled, without hearing it.
  window.wardSound = Object.freeze({
    get played() { return played.map(function (entry) { return Object.assign({}, entry); }); },
    get enabled() { return audio !== null; },
    get paused() { return paused(); },
  });

  localTimes();
  if (only) render({ beds: [only.tile] });
  connect();
})();
