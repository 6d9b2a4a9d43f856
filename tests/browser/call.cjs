// Headless Chromium calls a Natter user through natter signaling and TURN,
// relay only, with Chromium's fake microphone (fed from a WAV file).
// Usage: node call.cjs <server-url> <access-token> <callee-user-id> <mic.wav> <seconds>
// Prints one JSON line: {connected, localType, remoteType, packetsSent, ended}.
const { chromium } = require('playwright-core');

async function main() {
  const [url, token, callee, wav, secs] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${wav}`,
    ],
  });
  try {
    const page = await browser.newPage();
    page.on('console', (m) => process.stderr.write(`[page] ${m.text()}\n`));
    // A page on the server's origin: a secure context (loopback), so
    // getUserMedia exists. ICE servers are fetched here, the socket in the page.
    await page.goto(`${url}/healthz`);
    const ice = await (await fetch(`${url}/v1/calls/ice-servers`, {
      headers: { Authorization: `Bearer ${token}` },
    })).json();
    const result = await page.evaluate(runCall, { url, token, callee, secs: Number(secs), ice });
    process.stdout.write(JSON.stringify(result) + '\n');
  } finally {
    await browser.close();
  }
}

// Runs in the page.
async function runCall({ url, token, callee, secs, ice }) {
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
  const callId = 'browser-' + Math.random().toString(36).slice(2);
  const pc = new RTCPeerConnection({ iceServers: ice.ice_servers, iceTransportPolicy: 'relay' });
  const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
  mic.getTracks().forEach((t) => pc.addTrack(t, mic));
  pc.onicecandidate = (e) => {
    if (e.candidate) {
      ws.send(JSON.stringify({ type: 'call.ice', call_id: callId, candidate: JSON.stringify(e.candidate) }));
    }
  };
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  ws.send(JSON.stringify({ type: 'call.offer', call_id: callId, to: callee, media: 'audio', sdp: offer.sdp }));
  let ended = null;
  const pump = async () => {
    for (;;) {
      const f = await next((f) => f.type && f.type.startsWith('call.') && f.call_id === callId, 60000).catch(() => null);
      if (!f) return;
      if (f.type === 'call.answered') await pc.setRemoteDescription({ type: 'answer', sdp: f.sdp });
      if (f.type === 'call.ice' && f.candidate) await pc.addIceCandidate(JSON.parse(f.candidate));
      if (f.type === 'call.ended') { ended = f.reason; return; }
    }
  };
  const pumping = pump();
  const connected = await new Promise((ok) => {
    const t = setTimeout(() => ok(false), 30000);
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'connected') { clearTimeout(t); ok(true); }
      if (pc.connectionState === 'failed') { clearTimeout(t); ok(false); }
    };
  });
  if (connected) await new Promise((r) => setTimeout(r, secs * 1000));
  const stats = await pc.getStats();
  let localType = null, remoteType = null, packetsSent = 0;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      const pair = stats.get(s.selectedCandidatePairId);
      localType = stats.get(pair.localCandidateId).candidateType;
      remoteType = stats.get(pair.remoteCandidateId).candidateType;
    }
    if (s.type === 'outbound-rtp' && s.kind === 'audio') packetsSent = s.packetsSent;
  });
  ws.send(JSON.stringify({ type: 'call.hangup', call_id: callId }));
  await new Promise((r) => setTimeout(r, 300));
  pc.close();
  ws.close();
  return { connected, localType, remoteType, packetsSent, ended };
}

main().catch((e) => { console.error(e); process.exit(1); });
