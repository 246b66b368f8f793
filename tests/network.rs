//! Networks, black-box, with real bridges, taps, nftables and VMs. Every
//! packet stays inside network namespaces this test makes and deletes:
//! `test` holds the containers (the host side of their networks), and
//! `world` plays the internet behind a veth link, on TEST-NET-3, with a web
//! server and a DNS server (dnsmasq) of its own, which `test` names in its
//! resolv.conf (`ip netns exec` puts /etc/netns/NAME/resolv.conf there).
//! Images are pulled in the root namespace first, from the 127.0.0.1
//! registry.

mod common;

use std::process::{Command, Output};

use common::{Cli, Registry, text};

/// A network namespace of the test's own, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let name = format!("{name}-{}", std::process::id());
        sh(&format!(
            "ip netns add {name} && ip -n {name} link set lo up"
        ));
        Netns(name)
    }

    /// A shell command run inside the namespace.
    fn sh(&self, script: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0, "sh", "-c", script])
            .output()
            .unwrap()
    }

    /// `container ARGS...` inside the namespace.
    fn container(&self, cli: &Cli, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0, env!("CARGO_BIN_EXE_container")])
            .args(args)
            .env("CONTAINER_APP_ROOT", cli.app_root.path())
            .output()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.0));
    }
}

fn sh(script: &str) {
    let output = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(output.status.success(), "{script}: {}", text(&output).1);
}

/// Asserts that `container` failed with `code` (125 for `run`, as in
/// Docker; 1 for other commands); returns what it said.
fn refused(output: Output, code: i32) -> String {
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    stderr
}

/// A container's web server: busybox httpd serving "hello from web".
const WEB_SCRIPT: &str =
    "mkdir -p /www && echo hello from web > /www/index.html && httpd -f -p 80 -h /www";

fn ok(output: Output) -> String {
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "stderr: {stderr}");
    stdout
}

/// The test's namespaces: `test` (203.0.113.2, its default route through a
/// veth link) and `world` (203.0.113.1), where a web server says who called
/// and a DNS server knows one name, www.example.test.
struct World {
    test: Netns,
    _world: Netns,
    servers: Vec<std::process::Child>,
    _www: tempfile::TempDir,
}

impl World {
    fn new(tag: &str) -> World {
        let test = Netns::new(&format!("ctr-{tag}"));
        let world = Netns::new(&format!("ctr-{tag}-w"));
        sh(&format!(
            "ip link add vt-{tag}-{pid} netns {test} type veth peer name vw-{tag}-{pid} netns {world} && \
             ip -n {test} addr add 203.0.113.2/24 dev vt-{tag}-{pid} && ip -n {test} link set vt-{tag}-{pid} up && \
             ip -n {test} route add default via 203.0.113.1 && \
             ip -n {world} addr add 203.0.113.1/24 dev vw-{tag}-{pid} && ip -n {world} link set vw-{tag}-{pid} up",
            pid = std::process::id(),
            test = test.0,
            world = world.0,
        ));
        let www = tempfile::tempdir().unwrap();
        std::fs::create_dir(www.path().join("cgi-bin")).unwrap();
        let cgi = www.path().join("cgi-bin/who");
        std::fs::write(
            &cgi,
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"$REMOTE_ADDR\"\n",
        )
        .unwrap();
        sh(&format!("chmod 755 {}", cgi.display()));
        let server = Command::new("ip")
            .args([
                "netns", "exec", &world.0, "busybox", "httpd", "-f", "-p", "80", "-h",
            ])
            .arg(www.path())
            .spawn()
            .unwrap();
        // The host's resolv.conf (the test namespace's) names the world's DNS
        // server. A pid file of its own: with dnsmasq's default one, the
        // world of a test running beside this one has no DNS server.
        let dns = Command::new("ip")
            .args(["netns", "exec", &world.0, "dnsmasq", "--keep-in-foreground"])
            .arg(format!(
                "--pid-file={}",
                www.path().join("dnsmasq.pid").display()
            ))
            .args(["--no-resolv", "--no-hosts", "--listen-address=203.0.113.1"])
            .args([
                "--bind-interfaces",
                "--address=/www.example.test/203.0.113.1",
            ])
            .spawn()
            .unwrap();
        std::fs::create_dir_all(format!("/etc/netns/{}", test.0)).unwrap();
        std::fs::write(
            format!("/etc/netns/{}/resolv.conf", test.0),
            "nameserver 203.0.113.1\n",
        )
        .unwrap();
        World {
            test,
            _world: world,
            servers: vec![server, dns],
            _www: www,
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for child in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn containers_reach_each_other_the_host_and_the_world_and_networks_are_isolated() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    ok(cli.run(&["image", "pull", &image]));
    let world = World::new("net");
    let test = &world.test;

    ok(cli.run(&["network", "create", "--subnet", "10.77.0.0/24", "front"]));
    ok(cli.run(&["network", "create", "--subnet", "10.78.0.0/24", "back"]));
    ok(cli.run(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.79.0.0/24",
        "inner",
    ]));
    ok(test.container(
        &cli,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "front",
            "-p",
            "127.0.0.1:18080:80",
            &image,
            "sh",
            "-c",
            WEB_SCRIPT,
        ],
    ));
    let web: serde_json::Value = serde_json::from_str(&ok(cli.run(&["inspect", "web"]))).unwrap();
    assert_eq!(web[0]["network"]["name"], "front");
    assert_eq!(web[0]["network"]["address"], "10.77.0.2");
    assert_eq!(web[0]["network"]["ports"][0], "127.0.0.1:18080->80/tcp");
    let ls = ok(cli.run(&["ls"]));
    assert!(
        ls.contains("10.77.0.2  127.0.0.1:18080->80/tcp  web"),
        "{ls}"
    );

    // A second container on the network, by name and by IP; its own name
    // and --add-host's in /etc/hosts; the network's DNS server in resolv.conf.
    let output = test.container(
        &cli,
        &[
            "run",
            "--rm",
            "--name",
            "client",
            "--network",
            "front",
            "--add-host",
            "db:10.1.2.3",
            &image,
            "sh",
            "-c",
            "cat /etc/resolv.conf; grep -e client -e db /etc/hosts; \
             timeout 10 wget -qO- http://web/; timeout 10 wget -qO- http://10.77.0.2/",
        ],
    );
    assert_eq!(
        ok(output),
        "nameserver 10.77.0.1\n10.77.0.3\tclient\n10.1.2.3\tdb\nhello from web\nhello from web\n"
    );
    // The host (the test's namespace) by IP, and through the published port.
    assert_eq!(
        ok(test.sh("wget -qO- -T 5 http://10.77.0.2/")),
        "hello from web\n"
    );
    assert_eq!(
        ok(test.sh("curl -sS -m 5 http://127.0.0.1:18080/")),
        "hello from web\n"
    );
    // A taken port fails the start, naming it, before a VM boots.
    let output = test.container(
        &cli,
        &[
            "run",
            "-d",
            "--network",
            "front",
            "-p",
            "127.0.0.1:18080:80",
            &image,
            "true",
        ],
    );
    let stderr = refused(output, 125);
    assert!(
        stderr.contains("port 127.0.0.1:18080 is already in use"),
        "{stderr}"
    );
    // The world, through NAT, by a name only the world's DNS server knows
    // (the network's DNS server passes it on): the server sees the host's
    // address.
    let output = test.container(
        &cli,
        &[
            "run",
            "--rm",
            "--network",
            "back",
            &image,
            "timeout",
            "10",
            "wget",
            "-qO-",
            "http://www.example.test/cgi-bin/who",
        ],
    );
    // busybox httpd listens on IPv6 too: [::ffff:203.0.113.2].
    let seen = ok(output);
    assert!(
        seen.contains("203.0.113.2]") && !seen.contains("10.78."),
        "{seen}"
    );
    // Another network cannot reach in; an internal one cannot get out;
    // none has only loopback.
    let output = test.container(
        &cli,
        &[
            "run",
            "--rm",
            "--network",
            "back",
            &image,
            "sh",
            "-c",
            "timeout 5 wget -qO- http://10.77.0.2/ || echo unreachable",
        ],
    );
    assert_eq!(ok(output), "unreachable\n");
    let bridges = || ok(test.sh("ip -o link show type bridge")).lines().count();
    let before = bridges();
    let output = test.container(
        &cli,
        &[
            "run",
            "--rm",
            "--network",
            "inner",
            "--dns",
            "203.0.113.1",
            "--dns-search",
            "example.test",
            &image,
            "sh",
            "-c",
            "cat /etc/resolv.conf; ip route; timeout 5 wget -qO- http://203.0.113.1/cgi-bin/who || echo no way out",
        ],
    );
    let stdout = ok(output);
    assert!(
        stdout.starts_with("nameserver 203.0.113.1\nsearch example.test\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("default"), "{stdout}");
    assert!(stdout.ends_with("no way out\n"), "{stdout}");
    // Its only container gone, the network's bridge went with it.
    assert_eq!(bridges(), before);
    let output = test.container(
        &cli,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &image,
            "sh",
            "-c",
            "ls /sys/class/net",
        ],
    );
    assert_eq!(ok(output), "lo\n");

    // A build's RUN joins the network it is given, reaches the world the
    // same way, and leaves nothing of it behind.
    let context = tempfile::tempdir().unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {image}\nRUN timeout 10 wget -qO- http://www.example.test/cgi-bin/who\n"),
    )
    .unwrap();
    let before = bridges();
    let output = test.container(
        &cli,
        &[
            "build",
            "--network",
            "back",
            "--progress",
            "plain",
            context.path().to_str().unwrap(),
        ],
    );
    let stderr = text(&output).1;
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("203.0.113.2]"), "{stderr}");
    assert_eq!(bridges(), before);
    let leases = std::fs::read_dir(cli.app_root.path().join("networks/back/leases"))
        .map_or(0, |d| d.count());
    assert_eq!(leases, 0, "the step's address was given back");

    // A network in use is not removed; after rm -f -a and network rm, no
    // bridge, tap or table of ours is left.
    let output = cli.run(&["network", "rm", "front"]);
    let stderr = refused(output, 1);
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(ok(test.sh("ip -o link")).contains("ctrtap"));
    ok(test.container(&cli, &["rm", "-f", "-a"]));
    ok(test.container(&cli, &["network", "rm", "front", "back", "inner"]));
    let links = ok(test.sh("ip -o link"));
    assert!(
        !links.contains("ctrbr") && !links.contains("ctrtap"),
        "{links}"
    );
    assert_eq!(ok(test.sh("nft list tables")), "");
}

/// `container ARGS...` as user nobody with its own app root, inside `netns`
/// if given (the test itself runs as root). In the kvm group, if there is
/// one, as a user who may use KVM would be.
fn as_nobody(app_root: &std::path::Path, netns: Option<&Netns>, args: &[&str]) -> Output {
    let kvm = Command::new("getent")
        .args(["group", "kvm"])
        .output()
        .unwrap();
    let groups = match String::from_utf8_lossy(&kvm.stdout).split(':').nth(2) {
        Some(gid) if !gid.is_empty() => format!("--groups={gid}"),
        _ => "--clear-groups".to_string(),
    };
    let mut command = match netns {
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", &netns.0, "setpriv"]);
            command
        }
        None => Command::new("setpriv"),
    };
    command
        .args(["--reuid=65534", "--regid=65534", &groups])
        .args([
            "env",
            "-i",
            "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        ])
        .arg(format!("HOME={}", app_root.display()))
        .arg(format!("CONTAINER_APP_ROOT={}", app_root.display()))
        .arg(env!("CARGO_BIN_EXE_container"))
        .args(args)
        .output()
        .unwrap()
}

/// Without root there are no bridges or taps: a container gets QEMU's
/// user-mode stack, with egress (names through the host's resolvers) and
/// published ports; a named network is refused with one line.
#[test]
fn without_root_containers_get_user_mode_networking() {
    let registry = Registry::start();
    let image = registry.busybox();
    let world = World::new("user");
    let test = &world.test;
    let root = tempfile::tempdir().unwrap();
    sh(&format!("chown 65534:65534 {}", root.path().display()));
    let nobody = |netns, args: &[&str]| as_nobody(root.path(), netns, args);
    ok(nobody(None, &["image", "pull", &image]));

    ok(nobody(None, &["network", "create", "peers"]));
    let output = nobody(
        Some(test),
        &["run", "--rm", "--network", "peers", &image, "true"],
    );
    let stderr = refused(output, 125);
    assert!(
        stderr.starts_with("Error: network peers: ") && stderr.contains("needs root"),
        "{stderr}"
    );

    // QEMU cannot forward from an IPv6 host address: refused before anything is made.
    let output = nobody(
        Some(test),
        &["run", "-d", "-p", "[::1]:18090:80", &image, "true"],
    );
    let stderr = refused(output, 125);
    assert!(stderr.contains("IPv4 host addresses only"), "{stderr}");
    assert_eq!(ok(nobody(None, &["ls", "-a", "-q"])), "");

    // The server writes its page into a host directory (a bind mount
    // without root: virtiofsd runs as the user, without a sandbox).
    let www = tempfile::tempdir().unwrap();
    sh(&format!("chown 65534:65534 {}", www.path().display()));
    let www_spec = format!("{}:/www", www.path().display());
    ok(nobody(
        Some(test),
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            "127.0.0.1:18090:80",
            "-v",
            &www_spec,
            &image,
            "sh",
            "-c",
            WEB_SCRIPT,
        ],
    ));
    let web: serde_json::Value =
        serde_json::from_str(&ok(nobody(None, &["inspect", "web"]))).unwrap();
    assert_eq!(web[0]["network"]["mode"], "user");
    assert_eq!(web[0]["network"]["address"], "10.0.2.15");
    // httpd may still be starting when run -d returns.
    assert_eq!(
        ok(test.sh(
            "for i in $(seq 50); do curl -sf -m 2 http://127.0.0.1:18090/ && exit 0; sleep 0.2; done; exit 1"
        )),
        "hello from web\n"
    );
    let page = www.path().join("index.html");
    assert_eq!(std::fs::read_to_string(&page).unwrap(), "hello from web\n");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&page).unwrap()),
        65534
    );
    let output = nobody(
        Some(test),
        &["run", "-d", "-p", "127.0.0.1:18090:80", &image, "true"],
    );
    let stderr = refused(output, 125);
    assert!(
        stderr.contains("port 127.0.0.1:18090 is already in use"),
        "{stderr}"
    );

    // The world by a name only its DNS server knows, which QEMU's DNS
    // forwarder asks through the host's resolv.conf.
    let output = nobody(
        Some(test),
        &[
            "run",
            "--rm",
            &image,
            "sh",
            "-c",
            "cat /etc/resolv.conf; timeout 10 wget -qO- http://www.example.test/cgi-bin/who",
        ],
    );
    let stdout = ok(output);
    assert!(
        stdout.starts_with("nameserver 10.0.2.3\n") && stdout.contains("203.0.113.2]"),
        "{stdout}"
    );
    // These VMs are restored from one template (no shared directory):
    // each still has a MAC of its own, not the template's.
    let mac = || {
        let args = ["run", "--rm", &image, "cat", "/sys/class/net/eth0/address"];
        ok(nobody(Some(test), &args))
    };
    let (first, second) = (mac(), mac());
    assert_ne!(first, second);
    ok(nobody(Some(test), &["rm", "-f", "-a"]));
    assert_eq!(ok(nobody(None, &["ls", "-a", "-q"])), "");
}
