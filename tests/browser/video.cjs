// Headless Chromium in a video call with a Natter user, through natter
// signaling and TURN, relay only. Chromium's fake camera plays a Y4M test
// card (natter-cli test-card), its fake microphone a WAV file.
//
//   node video.cjs call   <server-url> <token> <callee-user-id> <card.y4m> <mic.wav> <seconds>
//   node video.cjs answer <server-url> <token> <card.y4m> <mic.wav> <wait-seconds>
//
// `call` places a video call and hangs up after <seconds> of media; `answer`
// waits for a video call, answers it and stays until the caller hangs up,
// reading the frame number stamped on each picture the page's <video> shows
// (drawn into a canvas). Prints one JSON line: {connected, localType,
// remoteType, videoPacketsSent, framesDecoded, stamps, ended}.
const { chromium } = require('playwright-core');

async function main() {
  const [mode, url, token, ...rest] = process.argv.slice(2);
  const [callee, card, wav, secs] = mode === 'call' ? rest : [null, ...rest];
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--autoplay-policy=no-user-gesture-required',
      '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream',
      `--use-file-for-fake-video-capture=${card}`,
      `--use-file-for-fake-audio-capture=${wav}`,
    ],
  });
  try {
    const page = await browser.newPage();
    page.on('console', (m) => process.stderr.write(`[page] ${m.text()}\n`));
    // A page on the server's origin: a secure context (loopback).
    await page.goto(`${url}/healthz`);
    const ice = await (await fetch(`${url}/v1/calls/ice-servers`, {
      headers: { Authorization: `Bearer ${token}` },
    })).json();
    const result = await page.evaluate(runCall, { mode, url, token, callee, secs: Number(secs), ice });
    process.stdout.write(JSON.stringify(result) + '\n');
  } finally {
    await browser.close();
  }
}

// Runs in the page.
async function runCall({ mode, url, token, callee, secs, ice }) {
  const ws = new WebSocket(url.replace(/^http/, 'ws') + '/v1/ws');
  const inbox = [];
  let wake = null;
  ws.onmessage = (e) => { inbox.push(JSON.parse(e.data)); if (wake) { wake(); wake = null; } };
  await new Promise((ok, err) => { ws.onopen = ok; ws.onerror = err; });
  ws.send(JSON.stringify({ type: 'auth', token }));
  const next = async (pred, ms) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = inbox.findIndex(pred);
      if (i >= 0) return inbox.splice(i, 1)[0];
      if (Date.now() > deadline) throw new Error('timed out waiting');
      await new Promise((r) => { wake = r; setTimeout(r, 100); });
    }
  };
  await next((f) => f.type === 'synced', 10000);
  const pc = new RTCPeerConnection({ iceServers: ice.ice_servers, iceTransportPolicy: 'relay' });
  const media = await navigator.mediaDevices.getUserMedia({
    audio: true,
    video: { width: 640, height: 480, frameRate: 30 },
  });
  media.getTracks().forEach((t) => pc.addTrack(t, media));

  // What the remote camera shows: every picture's stamped frame number.
  const stamps = [];
  const video = document.createElement('video');
  video.muted = true;
  video.playsInline = true;
  document.body.appendChild(video);
  pc.ontrack = (e) => {
    if (e.track.kind !== 'video') return;
    video.srcObject = new MediaStream([e.track]);
    video.play().catch((err) => console.log('play: ' + err));
    const canvas = document.createElement('canvas');
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    const read = () => {
      if (video.videoWidth > 0) {
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
        ctx.drawImage(video, 0, 0);
        const n = readStamp(ctx, canvas.width, canvas.height);
        if (n !== null && stamps[stamps.length - 1] !== n) stamps.push(n);
      }
      video.requestVideoFrameCallback(read);
    };
    video.requestVideoFrameCallback(read);
  };

  let callId;
  if (mode === 'call') {
    callId = 'browser-' + Math.random().toString(36).slice(2);
  } else {
    console.log('waiting for a call');
    const incoming = await next((f) => f.type === 'call.incoming', secs * 1000);
    callId = incoming.call_id;
    await pc.setRemoteDescription({ type: 'offer', sdp: incoming.sdp });
  }
  pc.onicecandidate = (e) => {
    if (e.candidate) {
      ws.send(JSON.stringify({ type: 'call.ice', call_id: callId, candidate: JSON.stringify(e.candidate) }));
    }
  };
  if (mode === 'call') {
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    ws.send(JSON.stringify({ type: 'call.offer', call_id: callId, to: callee, media: 'video', sdp: offer.sdp }));
  } else {
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    ws.send(JSON.stringify({ type: 'call.answer', call_id: callId, sdp: answer.sdp }));
  }
  let ended = null;
  let endedNow;
  const endedP = new Promise((r) => { endedNow = r; });
  const pump = async () => {
    for (;;) {
      const f = await next((f) => f.type && f.type.startsWith('call.') && f.call_id === callId, 120000).catch(() => null);
      if (!f) return;
      if (f.type === 'call.answered') await pc.setRemoteDescription({ type: 'answer', sdp: f.sdp });
      if (f.type === 'call.ice' && f.candidate) await pc.addIceCandidate(JSON.parse(f.candidate));
      if (f.type === 'call.ended') { ended = f.reason; endedNow(); return; }
    }
  };
  pump();
  const connected = await new Promise((ok) => {
    const t = setTimeout(() => ok(false), 30000);
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'connected') { clearTimeout(t); ok(true); }
      if (pc.connectionState === 'failed') { clearTimeout(t); ok(false); }
    };
  });
  if (connected) {
    if (mode === 'call') await new Promise((r) => setTimeout(r, secs * 1000));
    else await Promise.race([endedP, new Promise((r) => setTimeout(r, 120000))]);
  }
  const stats = await pc.getStats();
  let localType = null, remoteType = null, videoPacketsSent = 0, framesDecoded = 0;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      const pair = stats.get(s.selectedCandidatePairId);
      localType = stats.get(pair.localCandidateId).candidateType;
      remoteType = stats.get(pair.remoteCandidateId).candidateType;
    }
    if (s.type === 'outbound-rtp' && s.kind === 'video') videoPacketsSent = s.packetsSent;
    if (s.type === 'inbound-rtp' && s.kind === 'video') framesDecoded = s.framesDecoded;
  });
  if (mode === 'call') {
    ws.send(JSON.stringify({ type: 'call.hangup', call_id: callId }));
    await new Promise((r) => setTimeout(r, 300));
  }
  pc.close();
  ws.close();
  return { connected, localType, remoteType, videoPacketsSent, framesDecoded, stamps, ended };

  // The test card's stamp (natter-video's card.rs): two rows of 16 cells
  // across the top eighth, cell i spanning columns (i+1)/18..(i+2)/18 of the
  // width, row r spanning r/16..(r+1)/16 of the height; row 0 holds the bits
  // (white = 1), row 1 their complement. Cells are read in their middle half.
  function readStamp(ctx, w, h) {
    const img = ctx.getImageData(0, 0, w, Math.ceil(h / 8)).data;
    const mean = (col, row) => {
      const x0 = Math.floor((col + 1) * w / 18), x1 = Math.floor((col + 2) * w / 18);
      const y0 = Math.floor(row * h / 16), y1 = Math.floor((row + 1) * h / 16);
      const qx = Math.floor((x1 - x0) / 4), qy = Math.floor((y1 - y0) / 4);
      let sum = 0, count = 0;
      for (let y = y0 + qy; y < y1 - qy; y++) {
        for (let x = x0 + qx; x < x1 - qx; x++) {
          const i = (y * w + x) * 4;
          sum += 0.299 * img[i] + 0.587 * img[i + 1] + 0.114 * img[i + 2];
          count++;
        }
      }
      return count ? sum / count : 0;
    };
    let n = 0;
    for (let bit = 0; bit < 16; bit++) {
      const a = mean(bit, 0), b = mean(bit, 1);
      const one = a > 150 && b < 90, zero = a < 90 && b > 150;
      if (!one && !zero) return null;
      n = n * 2 + (one ? 1 : 0);
    }
    return n;
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
