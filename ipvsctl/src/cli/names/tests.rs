use super::*;

#[test]
fn inet_aton_accepts_the_c_forms() {
    assert_eq!(
        inet_aton("255.255.255.0"),
        Some(Ipv4Addr::new(255, 255, 255, 0))
    );
    assert_eq!(inet_aton("10.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(
        inet_aton("0xff.0377.0.1"),
        Some(Ipv4Addr::new(255, 255, 0, 1))
    );
    assert_eq!(inet_aton("1.2.3.256"), None);
    assert_eq!(inet_aton("abc"), None);
    assert_eq!(inet_aton(""), None);
}

#[test]
fn services_and_hosts_files_parse() {
    let s = parse_services("http 80/tcp www # web\nhttp 80/udp\n# c\nbad\n");
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].names, ["http", "www"]);
    let h = parse_hosts("127.0.0.1 localhost lo\n::1 ip6-localhost\nnot-an-ip x\n");
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].names[0], "localhost");
}

#[test]
fn numeric_addrport_brackets_ipv6() {
    let v4: IpAddr = "10.0.0.1".parse().unwrap();
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        addrport_to_anyname(v4, 80, Some(Protocol::Tcp), true),
        "10.0.0.1:80"
    );
    assert_eq!(
        addrport_to_anyname(v6, 443, Some(Protocol::Tcp), true),
        "[2001:db8::1]:443"
    );
}
