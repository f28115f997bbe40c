//! The UAPI Unix socket, `/var/run/wireguard/<iface>.sock`, as wireguard-go
//! serves it: the directory is created 0755, the socket is 0600, a stale
//! socket is replaced, a live one is left alone, and the socket is removed
//! when the server stops (its future is dropped). Each connection may carry
//! any number of requests.

use std::{
    io,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{
        AsyncBufRead, AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader,
    },
    net::UnixListener,
    task::JoinSet,
};
use zeroize::Zeroize as _;

use super::{
    wire::{serialize_get, serialize_status, Parsed, Request, RequestParser},
    UapiDevice, UapiError,
};

/// Where `wg(8)` looks for userspace interfaces.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// The longest line accepted. Real lines are under 100 bytes; this bounds
/// what a client can make the daemon buffer for one line.
const MAX_LINE: usize = 4096;

/// `/var/run/wireguard/<iface>.sock`. `iface` must already be a valid
/// interface name (see [`crate::config::validate_interface_name`]), so it
/// cannot climb out of the directory.
pub fn socket_path(iface: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{iface}.sock"))
}

/// A bound UAPI socket. Dropping it removes the socket file (if it is still
/// the one this server created).
#[derive(Debug)]
pub struct UapiServer {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of our socket file, so we never remove a successor's.
    id: (u64, u64),
}

impl UapiServer {
    /// Creates the socket at `path`. Must be called inside a tokio runtime.
    ///
    /// Fails with `AddrInUse` if another process is serving `path`, and
    /// refuses to replace anything at `path` that is not a socket.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }

        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{} is in use by another process", path.display()),
                    ));
                }
                log::debug!("removing stale UAPI socket {}", path.display());
                std::fs::remove_file(&path)?;
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }

        // Bind under a temporary name, restrict it, then rename it into
        // place: the socket is never reachable with looser permissions, and
        // the process umask is not touched (it is shared by all threads).
        let file_name = path.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "socket path has no file name")
        })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = dir.join(tmp_name);
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp)?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let meta = std::fs::symlink_metadata(&path)?;
        log::info!("UAPI listening on {}", path.display());
        Ok(Self {
            listener,
            path,
            id: (meta.dev(), meta.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections until the future is dropped, serving each on its
    /// own task. Dropping the future closes every connection and removes the
    /// socket.
    pub async fn run<D: UapiDevice>(self, device: Arc<Mutex<D>>) -> io::Result<()> {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let device = Arc::clone(&device);
                        connections.spawn(async move {
                            if let Err(e) = handle_connection(stream, &device).await {
                                log::debug!("UAPI connection ended: {e}");
                            }
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        log::warn!("UAPI accept on {}: {e}", self.path.display());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }
}

impl Drop for UapiServer {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds `path` and serves `device` on it until the future is dropped; then
/// the socket is removed. See [`UapiServer`].
pub async fn serve<D: UapiDevice>(path: impl AsRef<Path>, device: Arc<Mutex<D>>) -> io::Result<()> {
    UapiServer::bind(path)?.run(device).await
}

enum Line {
    Complete,
    Eof,
    TooLong,
}

/// Reads one line into `buf` (without the `\n`), never buffering more than
/// `MAX_LINE` bytes of it.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.zeroize();
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(Line::Eof);
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if buf.len() + chunk.len() > MAX_LINE {
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(chunk);
        let used = done.unwrap_or(chunk.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(Line::Complete);
        }
    }
}

fn lock<D>(device: &Mutex<D>) -> Result<std::sync::MutexGuard<'_, D>, UapiError> {
    device
        .lock()
        .map_err(|_| UapiError::Other("device lock poisoned".to_owned()))
}

/// Serves requests on one connection until the client hangs up or sends
/// something that is not a request.
pub async fn handle_connection<S, D>(stream: S, device: &Mutex<D>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    D: UapiDevice,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut parser = RequestParser::new();
    let mut line = Vec::with_capacity(256);
    let result = loop {
        match read_line(&mut reader, &mut line).await? {
            Line::Complete => {}
            Line::Eof => break Ok(()),
            Line::TooLong => {
                let e = UapiError::Protocol(format!("line longer than {MAX_LINE} bytes"));
                log::warn!("UAPI: {e}");
                writer
                    .write_all(serialize_status(&Err(e)).as_bytes())
                    .await?;
                break Ok(());
            }
        }
        match parser.push_line(&line) {
            Parsed::Incomplete => {}
            Parsed::Request(Request::Get) => {
                // Serialize outside the lock.
                let snapshot = lock(device).map(|d| d.snapshot());
                match snapshot {
                    Ok(s) => writer.write_all(serialize_get(&s).as_bytes()).await?,
                    Err(e) => {
                        writer
                            .write_all(serialize_status(&Err(e)).as_bytes())
                            .await?
                    }
                }
            }
            Parsed::Request(Request::Set(request)) => {
                let result = lock(device).and_then(|mut d| d.apply(request));
                if let Err(e) = &result {
                    log::warn!("UAPI set failed: {e}");
                }
                writer
                    .write_all(serialize_status(&result).as_bytes())
                    .await?;
            }
            Parsed::Failed(e) => {
                log::warn!("UAPI request refused: {e}");
                writer
                    .write_all(serialize_status(&Err(e)).as_bytes())
                    .await?;
            }
            Parsed::BadOperation(op) => {
                log::warn!(
                    "UAPI: unknown operation {:?}",
                    op.chars().take(64).collect::<String>()
                );
                break Ok(());
            }
        }
    };
    line.zeroize();
    let _ = writer.shutdown().await;
    result
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, process::Command};

    use rand_core::{OsRng, RngCore as _};
    use tokio::{
        io::{AsyncReadExt as _, BufReader},
        net::UnixStream,
    };

    use super::*;
    use crate::{
        config::IpPrefix,
        keys::{PresharedKey, PrivateKey, PublicKey},
        uapi::{DeviceSnapshot, PeerSnapshot, SetRequest},
    };

    /// A device that keeps its configuration in memory, with wireguard-go's
    /// semantics, and remembers every request.
    #[derive(Default)]
    struct FakeDevice {
        snap: DeviceSnapshot,
        peers: BTreeMap<PublicKey, PeerSnapshot>,
        applied: Vec<SetRequest>,
    }

    impl UapiDevice for FakeDevice {
        fn snapshot(&self) -> DeviceSnapshot {
            DeviceSnapshot {
                peers: self.peers.values().cloned().collect(),
                ..self.snap.clone()
            }
        }

        fn apply(&mut self, r: SetRequest) -> Result<(), UapiError> {
            self.applied.push(r.clone());
            if r.listen_port == Some(1) {
                return Err(UapiError::PortInUse("port 1 is taken".into()));
            }
            if let Some(k) = r.private_key {
                self.snap.private_key = k;
            }
            if let Some(p) = r.listen_port {
                self.snap.listen_port = p;
            }
            if let Some(m) = r.fwmark {
                self.snap.fwmark = m;
            }
            if r.replace_peers {
                self.peers.clear();
            }
            let own = self.snap.private_key.as_ref().map(PrivateKey::public_key);
            for u in r.peers {
                if Some(u.public_key) == own {
                    continue;
                }
                if u.remove {
                    self.peers.remove(&u.public_key);
                    continue;
                }
                if u.update_only && !self.peers.contains_key(&u.public_key) {
                    continue;
                }
                let p = self
                    .peers
                    .entry(u.public_key)
                    .or_insert_with(|| PeerSnapshot::new(u.public_key));
                if let Some(psk) = u.preshared_key {
                    p.preshared_key = (!psk.is_zero()).then_some(psk);
                }
                if let Some(e) = u.endpoint {
                    p.endpoint = Some(e);
                }
                if let Some(k) = u.persistent_keepalive_interval {
                    p.persistent_keepalive_interval = k;
                }
                if u.replace_allowed_ips {
                    p.allowed_ips.clear();
                }
                p.allowed_ips
                    .extend(u.allowed_ips.iter().map(IpPrefix::masked));
            }
            Ok(())
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "vpn-uapi-{tag}-{}-{:x}",
            std::process::id(),
            OsRng.next_u32()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Sends `request` and reads one reply (up to its `errno=` line and the
    /// blank line).
    async fn exchange(stream: &mut BufReader<UnixStream>, request: &str) -> String {
        stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            let n = stream.read_line(&mut line).await.unwrap();
            assert!(n > 0, "EOF after {reply:?}");
            reply.push_str(&line);
            if line.starts_with("errno=") {
                stream.read_line(&mut line).await.unwrap();
                reply.push('\n');
                return reply;
            }
        }
    }

    #[tokio::test]
    async fn socket_lifecycle_and_many_requests_per_connection() {
        let dir = temp_dir("life").join("sub");
        let path = dir.join("vpn0.sock");
        let device = Arc::new(Mutex::new(FakeDevice::default()));
        let server = UapiServer::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(dmode & 0o777, 0o755);
        // A second server on the same path is refused while the first lives.
        let e = UapiServer::bind(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        let task = tokio::spawn(server.run(Arc::clone(&device)));

        let mut c = BufReader::new(UnixStream::connect(&path).await.unwrap());
        assert_eq!(exchange(&mut c, "get=1\n\n").await, "errno=0\n\n");
        let key = PublicKey::from_bytes([9; 32]);
        let set = format!(
            "set=1\nlisten_port=4242\npublic_key={}\nendpoint=192.0.2.7:9\nallowed_ip=10.1.2.3/16\n\n",
            key.to_hex()
        );
        assert_eq!(exchange(&mut c, &set).await, "errno=0\n\n");
        assert_eq!(
            exchange(&mut c, "set=1\nbogus=1\n\n").await,
            "errno=-22\n\n"
        );
        assert_eq!(
            exchange(&mut c, "set=1\nlisten_port=1\n\n").await,
            "errno=-98\n\n"
        );
        let got = exchange(&mut c, "get=1\n\n").await;
        assert!(got.starts_with("listen_port=4242\n"), "{got}");
        assert!(
            got.contains("endpoint=192.0.2.7:9\nlast_handshake_time_sec=0\n"),
            "{got}"
        );
        assert!(
            got.ends_with("allowed_ip=10.1.0.0/16\nerrno=0\n\n"),
            "{got}"
        );
        // An unknown operation closes the connection.
        c.get_mut().write_all(b"hello\n").await.unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        // A line that never ends is cut off.
        let mut c = UnixStream::connect(&path).await.unwrap();
        c.write_all(b"set=1\n").await.unwrap();
        c.write_all(&vec![b'a'; MAX_LINE + 10]).await.unwrap();
        let mut rest = String::new();
        c.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "errno=-71\n\n");

        assert_eq!(device.lock().unwrap().applied.len(), 2);
        // Stopping the server removes the socket.
        task.abort();
        let _ = task.await;
        assert!(!path.exists());
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_other_files_are_not() {
        let dir = temp_dir("stale");
        let path = dir.join("wg9.sock");
        // A socket file nobody listens on (its listener was closed without
        // unlinking, as after a crash).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let server = UapiServer::bind(&path).unwrap();
        drop(server);
        assert!(!path.exists());

        std::fs::write(&path, "not a socket").unwrap();
        let e = UapiServer::bind(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn large_config_through_the_socket() {
        let dir = temp_dir("large");
        let path = dir.join("big.sock");
        let device = Arc::new(Mutex::new(FakeDevice::default()));
        let task = tokio::spawn(serve(path.clone(), Arc::clone(&device)));
        while !path.exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // 40 peers x 1000 = 40 000 allowed_ip lines in one request.
        let mut req = String::from("set=1\nreplace_peers=true\n");
        for i in 0..40u32 {
            let key = PublicKey::from_bytes([u8::try_from(i).unwrap() + 1; 32]);
            req.push_str(&format!("public_key={}\n", key.to_hex()));
            for j in 0..1000u32 {
                let a = std::net::Ipv4Addr::from((i << 24) | (j << 8));
                req.push_str(&format!("allowed_ip={a}/24\n"));
            }
        }
        req.push('\n');
        let start = std::time::Instant::now();
        let mut c = BufReader::new(UnixStream::connect(&path).await.unwrap());
        assert_eq!(exchange(&mut c, &req).await, "errno=0\n\n");
        let got = exchange(&mut c, "get=1\n\n").await;
        assert_eq!(got.matches("allowed_ip=").count(), 40_000);
        assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
        task.abort();
        let _ = task.await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Removes the socket even if the test fails half-way.
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn wg(args: &[&str]) -> std::process::Output {
        Command::new("/usr/bin/wg").args(args).output().unwrap()
    }

    /// The real `wg` tool against a fake device. `wg` only looks in
    /// /var/run/wireguard, so this uses a unique name there (and no network
    /// interface at all).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_wg_show_and_set() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root || !Path::new("/usr/bin/wg").exists() {
            eprintln!("skipped: needs root and /usr/bin/wg");
            return;
        }
        let name = format!("vpnt{:08x}", OsRng.next_u32());
        let path = socket_path(&name);
        let _cleanup = Cleanup(path.clone());

        let sk = PrivateKey::generate(&mut OsRng);
        let peer_a = PrivateKey::generate(&mut OsRng).public_key();
        let peer_b = PrivateKey::generate(&mut OsRng).public_key();
        let psk = PresharedKey::generate(&mut OsRng);
        let mut a = PeerSnapshot::new(peer_a);
        a.preshared_key = Some(psk.clone());
        a.endpoint = Some("[2001:db8::1]:51820".parse().unwrap());
        a.last_handshake = Some(Duration::new(1_700_000_000, 5));
        a.tx_bytes = 1234;
        a.rx_bytes = 5678;
        a.persistent_keepalive_interval = 25;
        a.allowed_ips = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/64".parse().unwrap()];
        let mut fake = FakeDevice::default();
        fake.snap.private_key = Some(sk.clone());
        fake.snap.listen_port = 51999;
        fake.snap.fwmark = 0x1234;
        fake.peers.insert(peer_a, a);
        let device = Arc::new(Mutex::new(fake));

        let server = UapiServer::bind(&path).unwrap();
        let task = tokio::spawn(server.run(Arc::clone(&device)));

        let run = |args: Vec<String>| {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                wg(&args)
            })
        };

        let out = run(vec!["show".into(), name.clone(), "dump".into()])
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dump = String::from_utf8(out.stdout).unwrap();
        let want = format!(
            "{}\t{}\t51999\t0x1234\n\
             {peer_a}\t{}\t[2001:db8::1]:51820\t10.0.0.0/8,fd00::/64\t1700000000\t5678\t1234\t25\n",
            &*sk.to_base64(),
            sk.public_key(),
            &*psk.to_base64(),
        );
        assert_eq!(dump, want);

        // wg set reaches the device.
        let out = run(vec![
            "set".into(),
            name.clone(),
            "listen-port".into(),
            "40000".into(),
            "peer".into(),
            peer_b.to_string(),
            "endpoint".into(),
            "192.0.2.9:443".into(),
            "allowed-ips".into(),
            "10.9.0.0/16,fd01::/48".into(),
            "peer".into(),
            peer_a.to_string(),
            "remove".into(),
        ])
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        {
            let d = device.lock().unwrap();
            let r = d.applied.last().unwrap();
            assert_eq!(r.listen_port, Some(40000));
            assert_eq!(r.peers.len(), 2);
            assert_eq!(r.peers[0].public_key, peer_b);
            assert!(r.peers[0].replace_allowed_ips);
            assert_eq!(
                r.peers[0].allowed_ips,
                vec!["10.9.0.0/16".parse().unwrap(), "fd01::/48".parse().unwrap()]
            );
            assert_eq!(r.peers[0].endpoint, Some("192.0.2.9:443".parse().unwrap()));
            assert!(r.peers[1].remove);
        }
        let out = run(vec!["show".into(), name.clone(), "allowed-ips".into()])
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("{peer_b}\t10.9.0.0/16 fd01::/48\n")
        );

        // A refused set comes back as an error message from wg.
        let out = run(vec![
            "set".into(),
            name.clone(),
            "listen-port".into(),
            "1".into(),
        ])
        .await
        .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Address already in use"), "{err}");

        // showconf round-trips through our config parser.
        let out = run(vec!["showconf".into(), name.clone()]).await.unwrap();
        let conf =
            crate::config::Config::parse(&String::from_utf8(out.stdout).unwrap(), "showconf")
                .unwrap();
        assert_eq!(conf.interface.private_key, sk);
        assert_eq!(conf.peers.len(), 1);
        assert_eq!(conf.peers[0].public_key, peer_b);

        task.abort();
        let _ = task.await;
        assert!(!path.exists());
    }
}
