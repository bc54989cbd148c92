"""WHEP viewer built on aiortc, an independent WebRTC stack.

Usage: whep_view.py URL TOKEN SECONDS
Receives audio and video for SECONDS and prints how many frames it decoded, as JSON.
"""
import asyncio
import json
import sys
import urllib.error
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription


def http(method, url, token, body=None):
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/sdp")
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {url}: {e.code} {e.read().decode()}")


async def main(url, token, seconds):
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    counts = {"video_frames": 0, "audio_frames": 0, "width": 0, "height": 0}

    async def consume(track):
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            if track.kind == "video":
                counts["video_frames"] += 1
                counts["width"], counts["height"] = frame.width, frame.height
            else:
                counts["audio_frames"] += 1

    @pc.on("track")
    def on_track(track):
        asyncio.ensure_future(consume(track))

    await pc.setLocalDescription(await pc.createOffer())
    loop = asyncio.get_running_loop()
    status, headers, answer = await loop.run_in_executor(
        None, http, "POST", url, token, pc.localDescription.sdp.encode()
    )
    assert status == 201, status
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.sleep(seconds)
    base = url.split("/api/")[0]
    location = headers.get("Location") or headers.get("location")
    await loop.run_in_executor(None, http, "DELETE", base + location, token)
    await pc.close()
    print(json.dumps(counts))


asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
