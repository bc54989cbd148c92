//! Simulated packet loss on the receive side, for tests and demos of loss recovery: drops one
//! in `n` incoming video RTP packets the first time each arrives, before the NACK generator
//! sees it. The generator then asks the sender for it again, and a retransmission (the same
//! sequence number) is let through. Only loss the network really recovers from is invisible.
//! The drop happens after SRTP decryption, so a client simulating loss turns SRTP replay
//! protection off (the retransmission would be refused as a replay otherwise).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use webrtc::interceptor::stream_info::StreamInfo;
use webrtc::interceptor::{
    Attributes, Interceptor, InterceptorBuilder, RTCPReader, RTCPWriter, RTPReader, RTPWriter,
};

/// Builds the interceptor; add it to the registry *before* the default ones, so that it sits
/// closest to the network.
pub struct DropVideo {
    pub one_in: u64,
    /// Packets dropped so far, across all streams.
    pub dropped: Arc<AtomicU64>,
}

impl InterceptorBuilder for DropVideo {
    fn build(
        &self,
        _id: &str,
    ) -> Result<Arc<dyn Interceptor + Send + Sync>, webrtc::interceptor::Error> {
        Ok(Arc::new(DropVideoInterceptor {
            one_in: self.one_in.max(2),
            dropped: self.dropped.clone(),
        }))
    }
}

struct DropVideoInterceptor {
    one_in: u64,
    dropped: Arc<AtomicU64>,
}

struct DroppingReader {
    inner: Arc<dyn RTPReader + Send + Sync>,
    one_in: u64,
    seen: AtomicU64,
    dropped_seqs: Mutex<HashSet<u16>>,
    dropped: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl RTPReader for DroppingReader {
    async fn read(
        &self,
        buf: &mut [u8],
        attributes: &Attributes,
    ) -> Result<(webrtc::rtp::packet::Packet, Attributes), webrtc::interceptor::Error> {
        loop {
            let (packet, attrs) = self.inner.read(buf, attributes).await?;
            let seq = packet.header.sequence_number;
            let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
            let mut dropped = self
                .dropped_seqs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Drop a first arrival now and then; a retransmission (seen before) goes through.
            if n.is_multiple_of(self.one_in) && dropped.insert(seq) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            return Ok((packet, attrs));
        }
    }
}

#[async_trait::async_trait]
impl Interceptor for DropVideoInterceptor {
    async fn bind_rtcp_reader(
        &self,
        reader: Arc<dyn RTCPReader + Send + Sync>,
    ) -> Arc<dyn RTCPReader + Send + Sync> {
        reader
    }

    async fn bind_rtcp_writer(
        &self,
        writer: Arc<dyn RTCPWriter + Send + Sync>,
    ) -> Arc<dyn RTCPWriter + Send + Sync> {
        writer
    }

    async fn bind_local_stream(
        &self,
        _info: &StreamInfo,
        writer: Arc<dyn RTPWriter + Send + Sync>,
    ) -> Arc<dyn RTPWriter + Send + Sync> {
        writer
    }

    async fn unbind_local_stream(&self, _info: &StreamInfo) {}

    async fn bind_remote_stream(
        &self,
        info: &StreamInfo,
        reader: Arc<dyn RTPReader + Send + Sync>,
    ) -> Arc<dyn RTPReader + Send + Sync> {
        if !info.mime_type.to_ascii_lowercase().starts_with("video/") {
            return reader;
        }
        Arc::new(DroppingReader {
            inner: reader,
            one_in: self.one_in,
            seen: AtomicU64::new(0),
            dropped_seqs: Mutex::new(HashSet::new()),
            dropped: self.dropped.clone(),
        })
    }

    async fn unbind_remote_stream(&self, _info: &StreamInfo) {}

    async fn close(&self) -> Result<(), webrtc::interceptor::Error> {
        Ok(())
    }
}
