"""WHIP publisher built on aiortc, an independent WebRTC stack.

Usage: whip_publish.py URL TOKEN SECONDS
Publishes aiortc's test video (H.264) and audio into a room for SECONDS, then ends the session
with DELETE. Prints {"location": ..., "answer_has_h264": ...} as JSON.
"""
import asyncio
import json
import sys
import urllib.error
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack


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
    pc.addTrack(AudioStreamTrack())
    pc.addTrack(VideoStreamTrack())
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
    print(json.dumps({"location": location, "answer_has_h264": "H264" in answer}))


asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
