"""Server-side WebRTC peers (aiortc): the shared first steps of every media endpoint the server terminates
(masked-call bridge legs, voicemail recording, pre-flight echo).

Untrusted SDP and candidates from browsers pass through here, so every failure becomes a `MediaError` with a
message fit for the client; nothing else escapes to the signaling handler.
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

log = logging.getLogger(__name__)

MAX_SDP_BYTES = 20000


class MediaError(Exception):
    """Negotiation failed because of what the client sent (or the server could not terminate its media)."""


def new_peer_connection(ice_servers: list[dict[str, Any]]) -> RTCPeerConnection:
    """A peer connection with exactly the configured ICE servers: aiortc's default public STUN server would stall
    every connection without a network."""
    servers = [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
        for s in ice_servers
    ]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers))


def check_offer(sdp: str) -> None:
    """Cheap shape checks before aiortc parses the text (its parser raises assorted errors on garbage)."""
    if not isinstance(sdp, str) or not sdp.strip():
        raise MediaError("offer: empty SDP")
    if len(sdp) > MAX_SDP_BYTES:
        raise MediaError(f"offer: SDP longer than {MAX_SDP_BYTES} characters")
    if not sdp.startswith("v=0"):
        raise MediaError("offer: not an SDP session description (must start with v=0)")
    if "\nm=audio " not in sdp.replace("\r\n", "\n"):
        raise MediaError("offer: no audio section (m=audio)")


async def accept_offer(pc: RTCPeerConnection, sdp: str) -> None:
    """Set the client's offer as the remote description, or MediaError."""
    check_offer(sdp)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
    except Exception as exc:  # aiortc raises ValueError, AssertionError, KeyError... on bad SDP
        log.info("rejected offer: %r", exc)
        raise MediaError(f"offer: could not be used ({type(exc).__name__}: {str(exc)[:200]})") from None


async def make_answer(pc: RTCPeerConnection) -> str:
    """Create and set the local answer; aiortc gathers before returning, so the SDP holds every server candidate."""
    try:
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:
        log.info("could not answer: %r", exc)
        raise MediaError(f"offer: no answer possible ({type(exc).__name__}: {str(exc)[:200]})") from None
    return pc.localDescription.sdp


def candidate_from_init(init: dict[str, Any] | None) -> RTCIceCandidate | None:
    """An RTCIceCandidateInit dict from a browser -> aiortc candidate; None (or an empty candidate) means
    end-of-candidates."""
    if init is None:
        return None
    text = str(init.get("candidate") or "")
    if not text:
        return None
    if text.startswith("candidate:"):
        text = text[len("candidate:"):]
    try:
        candidate = candidate_from_sdp(text)
    except Exception:
        raise MediaError("candidate: not an ICE candidate line") from None
    candidate.sdpMid = init.get("sdpMid")
    candidate.sdpMLineIndex = init.get("sdpMLineIndex")
    if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
        raise MediaError("candidate: needs sdpMid or sdpMLineIndex")
    return candidate


async def add_candidate(pc: RTCPeerConnection, init: dict[str, Any] | None) -> None:
    candidate = candidate_from_init(init)
    try:
        await pc.addIceCandidate(candidate)
    except Exception as exc:
        raise MediaError(f"candidate: could not be added ({type(exc).__name__})") from None
