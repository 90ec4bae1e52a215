//! The container's seccomp filter, built as runc builds it: the OCI profile compiled by the
//! host's libseccomp (loaded with dlopen, so nothing is needed at build time), then an
//! `-ENOSYS` stub in front for syscalls newer than any the profile names (what runc's
//! `patchbpf` adds, so new syscalls fail the way glibc expects), loaded with `seccomp(2)`.
//!
//! The libseccomp part is the same program runc loads for the same profile and library; the
//! stub is built by the same rules (architectures in a fixed order here).

use std::ffi::{CString, c_char, c_int, c_uint, c_void};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub syscalls: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub names: Vec<String>,
    pub action: String,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Vec<Arg>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

#[repr(C)]
struct ScmpArgCmp {
    arg: c_uint,
    op: c_uint,
    datum_a: u64,
    datum_b: u64,
}

type InitFn = unsafe extern "C" fn(u32) -> *mut c_void;
type ReleaseFn = unsafe extern "C" fn(*mut c_void);
type ArchAddFn = unsafe extern "C" fn(*mut c_void, u32) -> c_int;
type ArchResolveFn = unsafe extern "C" fn(*const c_char) -> u32;
type SyscallResolveFn = unsafe extern "C" fn(*const c_char) -> c_int;
type SyscallResolveArchFn = unsafe extern "C" fn(u32, *const c_char) -> c_int;
type RuleAddArrayFn =
    unsafe extern "C" fn(*mut c_void, u32, c_int, c_uint, *const ScmpArgCmp) -> c_int;
type ExportFn = unsafe extern "C" fn(*const c_void, c_int) -> c_int;

/// The few libseccomp entry points we use.
struct Lib {
    init: InitFn,
    release: ReleaseFn,
    arch_add: ArchAddFn,
    arch_resolve: ArchResolveFn,
    syscall_resolve: SyscallResolveFn,
    syscall_resolve_arch: SyscallResolveArchFn,
    rule_add_array: RuleAddArrayFn,
    export_bpf: ExportFn,
}

impl Lib {
    fn open() -> Result<Lib, String> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to the
        // signature libseccomp 2.x documents for it.
        unsafe {
            let h = libc::dlopen(
                c"libseccomp.so.2".as_ptr(),
                libc::RTLD_NOW | libc::RTLD_LOCAL,
            );
            if h.is_null() {
                return Err("libseccomp.so.2 cannot be loaded".into());
            }
            let sym = |name: &std::ffi::CStr| -> Result<*mut c_void, String> {
                let p = libc::dlsym(h, name.as_ptr());
                if p.is_null() {
                    Err(format!("libseccomp lacks {}", name.to_string_lossy()))
                } else {
                    Ok(p)
                }
            };
            Ok(Lib {
                init: std::mem::transmute::<*mut c_void, InitFn>(sym(c"seccomp_init")?),
                release: std::mem::transmute::<*mut c_void, ReleaseFn>(sym(c"seccomp_release")?),
                arch_add: std::mem::transmute::<*mut c_void, ArchAddFn>(sym(c"seccomp_arch_add")?),
                arch_resolve: std::mem::transmute::<*mut c_void, ArchResolveFn>(sym(
                    c"seccomp_arch_resolve_name",
                )?),
                syscall_resolve: std::mem::transmute::<*mut c_void, SyscallResolveFn>(sym(
                    c"seccomp_syscall_resolve_name",
                )?),
                syscall_resolve_arch: std::mem::transmute::<*mut c_void, SyscallResolveArchFn>(
                    sym(c"seccomp_syscall_resolve_name_arch")?,
                ),
                rule_add_array: std::mem::transmute::<*mut c_void, RuleAddArrayFn>(sym(
                    c"seccomp_rule_add_array",
                )?),
                export_bpf: std::mem::transmute::<*mut c_void, ExportFn>(sym(
                    c"seccomp_export_bpf",
                )?),
            })
        }
    }
}

const ENOSYS: u32 = 38;
const EPERM: u32 = 1;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_TRACE: u32 = 0x7ff0_0000;

fn action(name: &str, errno: Option<u32>) -> Result<u32, String> {
    Ok(match name {
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => 0,
        "SCMP_ACT_KILL_PROCESS" => 0x8000_0000,
        "SCMP_ACT_TRAP" => 0x0003_0000,
        "SCMP_ACT_ERRNO" => RET_ERRNO | (errno.unwrap_or(EPERM) & 0xffff),
        "SCMP_ACT_TRACE" => RET_TRACE | (errno.unwrap_or(EPERM) & 0xffff),
        "SCMP_ACT_LOG" => RET_LOG,
        "SCMP_ACT_ALLOW" => RET_ALLOW,
        other => return Err(format!("seccomp action {other} is not supported here")),
    })
}

fn compare(op: &str) -> Result<c_uint, String> {
    Ok(match op {
        "SCMP_CMP_NE" => 1,
        "SCMP_CMP_LT" => 2,
        "SCMP_CMP_LE" => 3,
        "SCMP_CMP_EQ" => 4,
        "SCMP_CMP_GE" => 5,
        "SCMP_CMP_GT" => 6,
        "SCMP_CMP_MASKED_EQ" => 7,
        other => return Err(format!("seccomp operator {other} is unknown")),
    })
}

/// `SCMP_ARCH_X86_64` -> libseccomp's `x86_64`.
fn arch_name(oci: &str) -> String {
    oci.trim_start_matches("SCMP_ARCH_").to_ascii_lowercase()
}

/// The kernel's AUDIT_ARCH value a libseccomp arch runs under (x32 shares x86_64's).
fn audit_arch(name: &str) -> Result<u32, String> {
    Ok(match name {
        "x86_64" | "x32" => 0xC000_003E,
        "x86" => 0x4000_0003,
        "aarch64" => 0xC000_00B7,
        "arm" => 0x4000_0028,
        other => return Err(format!("seccomp architecture {other} is not handled here")),
    })
}

/// A compiled filter and the `seccomp(2)` flags to load it with.
pub struct Filter {
    pub program: Vec<Insn>,
    pub flags: u32,
}

struct Ctx<'a> {
    lib: &'a Lib,
    ctx: *mut c_void,
}

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        // SAFETY: the context came from seccomp_init and is released once.
        unsafe { (self.lib.release)(self.ctx) }
    }
}

pub fn compile(profile: &Profile) -> Result<Filter, String> {
    let lib = Lib::open()?;
    let default = action(&profile.default_action, profile.default_errno_ret)?;
    // SAFETY: libseccomp calls with a live context and NUL-terminated names throughout.
    let ctx = unsafe { (lib.init)(default) };
    if ctx.is_null() {
        return Err("seccomp_init failed".into());
    }
    let ctx = Ctx { lib: &lib, ctx };
    let mut arches = Vec::new();
    for a in &profile.architectures {
        let name = arch_name(a);
        let c = CString::new(name.clone()).map_err(|_| "bad arch name")?;
        let token = unsafe { (lib.arch_resolve)(c.as_ptr()) };
        if token == 0 {
            return Err(format!("unknown seccomp architecture {a}"));
        }
        let rc = unsafe { (lib.arch_add)(ctx.ctx, token) };
        if rc != 0 && rc != -libc::EEXIST {
            return Err(format!("seccomp_arch_add {a}: {rc}"));
        }
        arches.push((name, token));
    }
    for rule in &profile.syscalls {
        let act = action(&rule.action, rule.errno_ret)?;
        if act == default {
            continue;
        }
        let mut conds = Vec::with_capacity(rule.args.len());
        for a in &rule.args {
            conds.push(ScmpArgCmp {
                arg: a.index,
                op: compare(&a.op)?,
                datum_a: a.value,
                datum_b: a.value_two,
            });
        }
        let mut indexes: Vec<u32> = rule.args.iter().map(|a| a.index).collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in &rule.names {
            let c = CString::new(name.as_str()).map_err(|_| "bad syscall name")?;
            let nr = unsafe { (lib.syscall_resolve)(c.as_ptr()) };
            // -1 (__NR_SCMP_ERROR): unknown to this libseccomp; as runc, leave it out. Other
            // negative numbers are libseccomp's pseudo-syscalls for names that exist only on
            // the profile's other architectures (x86's chown32...): they stay.
            if nr == -1 {
                continue;
            }
            let add = |conds: &[ScmpArgCmp]| {
                let rc = unsafe {
                    (lib.rule_add_array)(
                        ctx.ctx,
                        act,
                        nr,
                        conds.len() as c_uint,
                        if conds.is_empty() {
                            std::ptr::null()
                        } else {
                            conds.as_ptr()
                        },
                    )
                };
                if rc != 0 {
                    Err(format!("seccomp rule for {name}: {rc}"))
                } else {
                    Ok(())
                }
            };
            if repeated {
                // libseccomp cannot AND two conditions on one argument: one rule each (OR).
                for c in &conds {
                    add(std::slice::from_ref(c))?;
                }
            } else {
                add(&conds)?;
            }
        }
    }
    let mut program = export(&lib, &ctx)?;
    if needs_stub(default) {
        let stub = enosys_stub(&lib, profile, &arches)?;
        program.splice(0..0, stub);
    }
    let mut flags = 0;
    for f in &profile.flags {
        match f.as_str() {
            "SECCOMP_FILTER_FLAG_LOG" => flags |= 2,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => flags |= 4,
            // One thread only here.
            "SECCOMP_FILTER_FLAG_TSYNC" => {}
            other => return Err(format!("seccomp flag {other} is not supported here")),
        }
    }
    Ok(Filter { program, flags })
}

fn export(lib: &Lib, ctx: &Ctx) -> Result<Vec<Insn>, String> {
    // SAFETY: memfd_create with a static name; the fd is owned below.
    let fd = unsafe { libc::memfd_create(c"seccomp-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: just created.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let rc = unsafe { (lib.export_bpf)(ctx.ctx, fd.as_raw_fd()) };
    if rc != 0 {
        return Err(format!("seccomp_export_bpf: {rc}"));
    }
    let mut f = std::fs::File::from(fd);
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() % 8 != 0 || bytes.is_empty() {
        return Err(format!("seccomp_export_bpf gave {} bytes", bytes.len()));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| Insn {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// A permissive default needs no stub: unknown syscalls are allowed anyway.
fn needs_stub(default: u32) -> bool {
    !matches!(default & 0xffff_0000, RET_ALLOW | RET_LOG | RET_TRACE)
}

const LD_W_ABS: u16 = 0x20;
const JA: u16 = 0x05;
const JEQ: u16 = 0x15;
const JGT: u16 = 0x25;
const JSET: u16 = 0x45;
const RET_K: u16 = 0x06;

fn ld(off: u32) -> Insn {
    Insn {
        code: LD_W_ABS,
        jt: 0,
        jf: 0,
        k: off,
    }
}
fn ja(skip: u32) -> Insn {
    Insn {
        code: JA,
        jt: 0,
        jf: 0,
        k: skip,
    }
}
fn jmp(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}
fn ret(k: u32) -> Insn {
    Insn {
        code: RET_K,
        jt: 0,
        jf: 0,
        k,
    }
}

fn short(n: u32) -> Result<u8, String> {
    u8::try_from(n).map_err(|_| "seccomp stub jump too long".to_string())
}

/// runc's `-ENOSYS` stub: per native architecture, syscalls above the largest one the profile
/// names (for that arch, x32 apart from x86_64) return ENOSYS; the rest go to the filter.
fn enosys_stub(
    lib: &Lib,
    profile: &Profile,
    arches: &[(String, u32)],
) -> Result<Vec<Insn>, String> {
    use std::collections::BTreeMap;
    // audit arch -> (libseccomp arch name -> largest syscall number).
    let mut last: BTreeMap<u32, BTreeMap<String, u32>> = BTreeMap::new();
    for (name, token) in arches {
        let native = audit_arch(name)?;
        let mut largest = 0u32;
        for rule in &profile.syscalls {
            for n in &rule.names {
                let c = CString::new(n.as_str()).map_err(|_| "bad syscall name")?;
                let nr = unsafe { (lib.syscall_resolve_arch)(*token, c.as_ptr()) };
                if nr >= 0 && nr as u32 > largest {
                    largest = nr as u32;
                }
            }
        }
        if largest != 0 {
            last.entry(native)
                .or_default()
                .insert(name.clone(), largest);
        }
    }
    let enosys = RET_ERRNO | ENOSYS;
    // Built backwards from the end, so jumps are counted from the tail.
    let mut tail: Vec<Insn> = vec![ja(1), ret(enosys)];
    let mut table: BTreeMap<u32, u32> = BTreeMap::new();
    for (native, maxes) in &last {
        let to_enosys = tail.len() as u32 - 1;
        let to_filter = to_enosys + 1;
        let mut section = vec![ld(0)];
        match maxes.len() {
            1 => {
                let (name, nr) = maxes.iter().next().expect("one entry");
                let mut sec_tail = vec![jmp(JGT, *nr, short(to_enosys + 1)?, 0), ja(to_filter)];
                if *native == 0xC000_003E {
                    let skip = short(sec_tail.len() as u32 - 1)?;
                    let mode = match name.as_str() {
                        // x86_64 rules do not apply to x32 calls (bit 30 set): skip to the ja.
                        "x86_64" => jmp(JSET, 1 << 30, skip, 0),
                        "x32" => jmp(JSET, 1 << 30, 0, skip),
                        other => return Err(format!("unexpected x86_64 mode {other}")),
                    };
                    sec_tail.insert(0, mode);
                }
                section.extend(sec_tail);
            }
            2 => {
                let x64 = maxes.get("x86_64").ok_or("x86_64 missing")?;
                let x32 = maxes.get("x32").ok_or("x32 missing")?;
                section.extend([
                    jmp(JSET, 1 << 30, 1, 0),
                    jmp(JGT, *x64, short(to_enosys + 2)?, 1),
                    jmp(JGT, *x32, short(to_enosys + 1)?, 0),
                    ja(to_filter),
                ]);
            }
            n => return Err(format!("{n} architectures share one native arch")),
        }
        section.extend(tail);
        tail = section;
        table.insert(*native, tail.len() as u32);
    }
    tail.insert(0, ja(tail.len() as u32));
    for (native, from_end) in &table {
        let jump = tail.len() as u32 - from_end;
        tail.insert(0, jmp(JEQ, *native, short(jump)?, 0));
    }
    tail.insert(0, ld(4));
    Ok(tail)
}

/// Loads the filter into this thread (and what it execs).
pub fn load(filter: &Filter) -> std::io::Result<()> {
    #[repr(C)]
    struct Fprog {
        len: u16,
        filter: *const Insn,
    }
    let prog = Fprog {
        len: filter.program.len() as u16,
        filter: filter.program.as_ptr(),
    };
    // SAFETY: the program outlives the call; SECCOMP_SET_MODE_FILTER = 1.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            1 as libc::c_ulong,
            filter.flags as libc::c_ulong,
            &prog as *const Fprog,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> Profile {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_profile_compiles_with_the_enosys_stub_in_front() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
                "syscalls":[{"names":["read","write","exit_group","personality"],"action":"SCMP_ACT_ALLOW"},
                            {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let f = compile(&p).unwrap();
        assert_eq!(f.program[0], ld(4), "the stub loads the arch first");
        assert!(
            f.program
                .iter()
                .any(|i| i.code == RET_K && i.k == RET_ERRNO | ENOSYS)
        );
        let allow = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"names":["mount"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        let f = compile(&allow).unwrap();
        assert!(
            !f.program.iter().any(|i| i.k == RET_ERRNO | ENOSYS),
            "no stub"
        );
    }

    #[test]
    fn unsupported_actions_are_errors() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(compile(&p).is_err());
    }
}
