//! Framing of `/cairn/req/1` on a libp2p stream: one bcs message per direction, behind
//! a 4-byte big-endian length; a frame longer than [`MAX_MESSAGE`] is refused before it
//! is read, and a message that does not decode canonically is an `InvalidData` error.

use libp2p::StreamProtocol;
use libp2p::futures::{AsyncReadExt as _, AsyncWriteExt as _};
use libp2p::request_response;
use serde::Serialize;

use cairn_proto::encoding::{decode, encode};

use crate::records::wire::{Request, Response};

/// Largest gossip message or request/response frame, bytes.
pub const MAX_MESSAGE: usize = 8 << 20;

/// Length-delimited bcs framing for the request-response protocol.
#[derive(Debug, Clone, Default)]
pub struct WireCodec;

async fn read_frame<T: libp2p::futures::AsyncRead + Unpin + Send, M: Serialize + serde::de::DeserializeOwned>(
    io: &mut T,
) -> std::io::Result<M> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {len} bytes is too long")));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    decode(&buf, MAX_MESSAGE).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

async fn write_frame<T: libp2p::futures::AsyncWrite + Unpin + Send, M: Serialize>(
    io: &mut T,
    msg: &M,
) -> std::io::Result<()> {
    let bytes = encode(msg).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "frame too long"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    io.close().await
}

#[async_trait::async_trait]
impl request_response::Codec for WireCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Request>
    where
        T: libp2p::futures::AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }
    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Response>
    where
        T: libp2p::futures::AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }
    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Request) -> std::io::Result<()>
    where
        T: libp2p::futures::AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }
    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Response) -> std::io::Result<()>
    where
        T: libp2p::futures::AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}
