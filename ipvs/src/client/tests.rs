use super::*;
use crate::model::Destination;

#[test]
fn enoent_means_scheduler_for_services_and_destination_for_destinations() {
    let key = ServiceKey::tcp("10.0.0.1".parse().unwrap(), 80);
    let svc = Service::new(key, "nope");
    let err = kernel_error(Command::NewService, ENOENT, Target::NewService(&svc));
    assert!(
        matches!(&err, Error::UnknownScheduler { name, op: "NEW_SERVICE" } if name == "nope"),
        "{err:?}"
    );
    let dest = Destination::new("10.0.1.1".parse().unwrap(), 8080);
    let target = Target::Destination(&key, dest.addr, dest.port);
    let err = kernel_error(Command::DelDest, ENOENT, target);
    assert!(
        matches!(err, Error::DestinationNotFound { port: 8080, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "DEL_DEST: no such destination 10.0.1.1:8080 in service TCP 10.0.0.1:80"
    );
}

#[test]
fn other_errnos_map_to_typed_errors() {
    let key = ServiceKey::udp("2001:db8::1".parse().unwrap(), 53);
    let svc = Service::new(key, "rr");
    let err = kernel_error(Command::DelService, ESRCH, Target::Service(&key));
    assert_eq!(
        err.to_string(),
        "DEL_SERVICE: no such service: UDP [2001:db8::1]:53"
    );
    let err = kernel_error(
        Command::NewDest,
        ESRCH,
        Target::Destination(&key, key_addr(), 1),
    );
    assert!(matches!(err, Error::ServiceNotFound { .. }), "{err:?}");
    let err = kernel_error(Command::NewService, EEXIST, Target::NewService(&svc));
    assert_eq!(
        err.to_string(),
        "NEW_SERVICE: service UDP [2001:db8::1]:53 already exists"
    );
    let err = kernel_error(Command::GetService, EPERM, Target::None);
    assert!(matches!(err, Error::PermissionDenied { op: "GET_SERVICE" }));
    let err = kernel_error(Command::Flush, 22, Target::None);
    assert!(matches!(
        err,
        Error::Kernel {
            errno: 22,
            op: "FLUSH"
        }
    ));
    assert!(err.to_string().contains("Invalid argument"), "{err}");
}

#[test]
fn client_can_move_to_a_blocking_thread() {
    fn send<T: Send>() {}
    send::<Client>();
}

fn key_addr() -> IpAddr {
    "2001:db8::2".parse().unwrap()
}
