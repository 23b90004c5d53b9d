use super::*;
use ipvs::ServiceFlags;

/// An in-memory IPVS table with the kernel's errors.
#[derive(Debug, Default)]
struct FakeIpvs {
    table: Vec<(Service, Vec<Destination>)>,
    timeouts: Timeouts,
}

impl FakeIpvs {
    fn find(&mut self, key: &ServiceKey) -> Result<&mut (Service, Vec<Destination>), Error> {
        self.table
            .iter_mut()
            .find(|(s, _)| s.key == *key)
            .ok_or(Error::ServiceNotFound {
                op: "fake",
                service: *key,
            })
    }
}

fn dest_missing(key: &ServiceKey, d: &Destination) -> Error {
    Error::DestinationNotFound {
        op: "fake",
        service: *key,
        addr: d.addr,
        port: d.port,
    }
}

impl Ipvs for FakeIpvs {
    fn info(&mut self) -> Result<Info, Error> {
        Ok(Info {
            version: 0x010201,
            conn_table_size: 4096,
        })
    }
    fn services(&mut self) -> Result<Vec<Service>, Error> {
        Ok(self.table.iter().map(|(s, _)| s.clone()).collect())
    }
    fn service(&mut self, key: &ServiceKey) -> Result<Service, Error> {
        Ok(self.find(key)?.0.clone())
    }
    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<Destination>, Error> {
        Ok(self.find(key)?.1.clone())
    }
    fn add_service(&mut self, s: &Service) -> Result<(), Error> {
        if self.find(&s.key).is_ok() {
            return Err(Error::AlreadyExists {
                op: "fake",
                what: s.key.to_string(),
            });
        }
        let mut s = s.clone();
        s.flags |= ServiceFlags::HASHED;
        self.table.push((s, Vec::new()));
        Ok(())
    }
    fn edit_service(&mut self, s: &Service) -> Result<(), Error> {
        let entry = self.find(&s.key)?;
        entry.0 = s.clone();
        entry.0.flags |= ServiceFlags::HASHED;
        Ok(())
    }
    fn delete_service(&mut self, key: &ServiceKey) -> Result<(), Error> {
        self.find(key)?;
        self.table.retain(|(s, _)| s.key != *key);
        Ok(())
    }
    fn add_destination(&mut self, key: &ServiceKey, d: &Destination) -> Result<(), Error> {
        let dests = &mut self.find(key)?.1;
        if dests.iter().any(|x| x.addr == d.addr && x.port == d.port) {
            return Err(Error::AlreadyExists {
                op: "fake",
                what: "destination".into(),
            });
        }
        dests.push(d.clone());
        Ok(())
    }
    fn edit_destination(&mut self, key: &ServiceKey, d: &Destination) -> Result<(), Error> {
        let dests = &mut self.find(key)?.1;
        let slot = dests
            .iter_mut()
            .find(|x| x.addr == d.addr && x.port == d.port)
            .ok_or_else(|| dest_missing(key, d))?;
        *slot = d.clone();
        Ok(())
    }
    fn delete_destination(&mut self, key: &ServiceKey, d: &Destination) -> Result<(), Error> {
        let dests = &mut self.find(key)?.1;
        let before = dests.len();
        dests.retain(|x| !(x.addr == d.addr && x.port == d.port));
        if dests.len() == before {
            return Err(dest_missing(key, d));
        }
        Ok(())
    }
    fn timeouts(&mut self) -> Result<Timeouts, Error> {
        Ok(self.timeouts)
    }
    fn set_timeouts(&mut self, t: &Timeouts) -> Result<(), Error> {
        self.timeouts = *t;
        Ok(())
    }
    fn zero(&mut self, key: Option<&ServiceKey>) -> Result<(), Error> {
        if let Some(key) = key {
            self.find(key)?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), Error> {
        self.table.clear();
        Ok(())
    }
}

/// Run one command line against `fake`: (status, stdout, stderr).
fn sh(fake: &mut FakeIpvs, line: &str, stdin: &str) -> (i32, String, String) {
    let argv: Vec<String> = std::iter::once("ipvsctl")
        .chain(line.split_whitespace())
        .map(String::from)
        .collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut input = stdin.as_bytes();
    let status = match args::parse(&argv) {
        Ok(Parsed::Run(inv)) if inv.cmd == Cmd::Restore => {
            restore("ipvsctl", fake, &mut input, &mut out, &mut err)
        }
        Ok(Parsed::Run(inv)) => execute(&inv, fake, &mut out, &mut err),
        Ok(_) => 0,
        Err(e) => {
            err.extend_from_slice(format!("{}\n", e.message).as_bytes());
            e.code
        }
    };
    (
        status,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

const RULES: &str = "-A -t 10.0.0.1:80 -s wlc -p 60 -M 255.255.255.0\n\
                     -a -t 10.0.0.1:80 -r 10.0.1.2:8080 -m -w 2\n\
                     -a -t 10.0.0.1:80 -r 10.0.1.1 -g -w 0\n\
                     -A -f 9 -6 -s sh -b sh-port\n\
                     -a -f 9 -6 -r [2001:db8::5]:0 -i -w 1\n";

#[test]
fn restore_then_save_round_trips() {
    let mut fake = FakeIpvs::default();
    assert_eq!(
        sh(&mut fake, "-R", RULES),
        (0, String::new(), String::new())
    );
    let (status, saved, _) = sh(&mut fake, "-Sn", "");
    assert_eq!(status, 0);
    assert_eq!(
        saved,
        "-A -t 10.0.0.1:80 -s wlc -p 60 -M 255.255.255.0\n\
         -a -t 10.0.0.1:80 -r 10.0.1.1:80 -g -w 0\n\
         -a -t 10.0.0.1:80 -r 10.0.1.2:8080 -m -w 2\n\
         -A -f 9 -6 -s sh -b sh-port\n\
         -a -f 9 -6 -r [2001:db8::5]:0 -i -w 1 --tun-type ipip\n"
    );
    let (_, listed, _) = sh(&mut fake, "-Ln -f 9 -6", "");
    assert_eq!(
        listed,
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
         FWM  9 IPv6 sh (sh-port)\n  -> [2001:db8::5]:0              Tunnel  1      0          0         \n"
    );
}

#[test]
fn kernel_errors_use_ipvsadm_wording_and_status() {
    let mut fake = FakeIpvs::default();
    sh(&mut fake, "-R", RULES);
    let cases = [
        ("-A -t 10.0.0.1:80", "Service already exists\n"),
        (
            "-a -t 10.0.0.1:80 -r 10.0.1.2:8080 -m",
            "Destination already exists\n",
        ),
        ("-d -t 10.0.0.1:80 -r 10.0.1.9", "No such destination\n"),
        ("-a -t 10.0.0.7:80 -r 10.0.1.9", "Service not defined\n"),
        ("-D -t 10.0.0.7:80", "No such service\n"),
    ];
    for (line, msg) in cases {
        assert_eq!(
            sh(&mut fake, line, ""),
            (255, String::new(), msg.to_string()),
            "{line}"
        );
    }
    assert_eq!(
        sh(&mut fake, "-L -t 10.0.0.7:80", ""),
        (1, String::new(), "No such service\n".into())
    );
    assert_eq!(
        sh(&mut fake, "-A -t 10.0.0.1", "").2,
        "Zero port specified for non-persistent service\n"
    );
}

#[test]
fn restore_reports_bad_lines_and_continues_past_kernel_errors() {
    let mut fake = FakeIpvs::default();
    let (status, _, err) = sh(
        &mut fake,
        "-R",
        "-A -t 10.0.0.1:80\n-A -t 10.0.0.1:80\n-A -t 10.0.0.2:80\n",
    );
    assert_eq!((status, err.as_str()), (255, "Service already exists\n"));
    assert_eq!(fake.table.len(), 2);
    let (status, _, err) = sh(
        &mut fake,
        "-R",
        "-A -t 10.0.0.3:80 -w 1\n-A -t 10.0.0.4:80\n",
    );
    assert_eq!(status, 2);
    assert_eq!(
        err,
        "Illegal 'weight' option with the 'add-service' command\n"
    );
    assert_eq!(
        fake.table.len(),
        2,
        "restore stops at a line that does not parse"
    );
}

#[test]
fn edit_zero_timeouts_and_clear() {
    let mut fake = FakeIpvs::default();
    sh(&mut fake, "-R", RULES);
    assert_eq!(sh(&mut fake, "-E -t 10.0.0.1:80 -s rr", "").0, 0);
    assert_eq!(
        sh(&mut fake, "-e -t 10.0.0.1:80 -r 10.0.1.2:8080 -m -w 7", "").0,
        0
    );
    let saved = sh(&mut fake, "-S -n", "").1;
    assert!(saved.starts_with("-A -t 10.0.0.1:80 -s rr\n"), "{saved}");
    assert!(saved.contains("-r 10.0.1.2:8080 -m -w 7\n"), "{saved}");
    assert_eq!(sh(&mut fake, "--set 900 120 300", "").0, 0);
    assert_eq!(
        sh(&mut fake, "-L --timeout", "").1,
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    assert_eq!(sh(&mut fake, "-Z", "").0, 0);
    assert_eq!(sh(&mut fake, "-C", "").0, 0);
    assert_eq!(
        sh(&mut fake, "-Ln", "").1,
        "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    );
}
