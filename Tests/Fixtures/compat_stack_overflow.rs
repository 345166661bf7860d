// Stack overflow report: Rust's runtime installs its own SIGSEGV/SIGBUS handler and a guard-page
// aware alternate signal stack per thread, and on a stack overflow prints
//   thread '<name>' has overflowed its stack
//   fatal runtime error: stack overflow
// to stderr and dies by SIGABRT. An allocator that installs its own SIGSEGV handler (or its own
// alternate signal stacks) on the first malloc breaks this: the process dies by a bare SIGSEGV
// without the report.
// argv[1] = "thread": unbounded recursion in a spawned thread; "main": in the main thread.
// Prints arena_malloc_is_active=N first (stdout), then recurses. Expected under glibc: the report
// on stderr and death by SIGABRT (exit status 134 from a shell). The harness checks stderr for
// "has overflowed its stack" and the terminating signal.
//   rustc -O -o compat_stack_overflow Tests/Fixtures/compat_stack_overflow.rs
//   timeout -s KILL 30 env LD_PRELOAD=libArenaMalloc.so ./compat_stack_overflow thread
//   timeout -s KILL 30 env LD_PRELOAD=libArenaMalloc.so ./compat_stack_overflow main
use std::ffi::{c_char, c_void};
use std::hint::black_box;
use std::io::Write;

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

fn arena_malloc_is_active() -> i32 {
    // RTLD_DEFAULT is the null handle on glibc.
    let sym = unsafe { dlsym(std::ptr::null_mut(), b"arena_malloc_is_active\0".as_ptr() as *const c_char) };
    if sym.is_null() {
        return 0;
    }
    let f: extern "C" fn() -> i32 = unsafe { std::mem::transmute(sym) };
    f()
}

// Each frame holds a 1 KiB buffer the optimizer cannot remove, and the recursion is not a tail call.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let mut buf = [0u8; 1024];
    buf[(depth % 1024) as usize] = depth as u8;
    let buf = black_box(buf);
    let below = recurse(black_box(depth + 1));
    below.wrapping_add(buf[(depth % 7) as usize] as u64)
}

fn main() {
    let active = arena_malloc_is_active();
    println!("arena_malloc_is_active={}", active);
    let mode = std::env::args().nth(1).unwrap_or_default();
    // A heap allocation before the overflow, so an allocator that hooks the first malloc has done so.
    let v: Vec<u8> = black_box(vec![1u8; 4096]);
    println!("mode={}", mode);
    let _ = std::io::stdout().flush();
    match mode.as_str() {
        "thread" => {
            let handle = std::thread::Builder::new()
                .name("overflow".into())
                .spawn(|| {
                    let w: Vec<u8> = black_box(vec![2u8; 4096]);
                    let r = recurse(black_box(0));
                    black_box(&w);
                    r
                })
                .expect("spawn");
            let r = handle.join();
            println!("FAIL the thread returned: {:?}", r.is_ok());
        }
        "main" => {
            let r = recurse(black_box(0));
            println!("FAIL recursion returned {}", r);
        }
        _ => {
            println!("FAIL usage: compat_stack_overflow thread|main");
            std::process::exit(2);
        }
    }
    black_box(&v);
    std::process::exit(1);
}
