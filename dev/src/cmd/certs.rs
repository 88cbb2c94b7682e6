//! `fedgate-dev certs dev DIR`: the development PKI.

use std::path::PathBuf;
use std::process::ExitCode;

use fedgate_dev::devpki::{self, DevPkiOptions};

/// Certificate commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write CAs for the federation, collectives and edge, with user, server, privileged and fleet certificates.
    Dev(DevArgs),
}

/// Arguments of `fedgate-dev certs dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Folder to write into; an existing PKI with the same realms is reused.
    dir: PathBuf,
    /// Regenerate everything even if the folder already holds a PKI.
    #[arg(long)]
    force: bool,
    /// RSA key size.
    #[arg(long, value_enum, default_value = "2048")]
    key_bits: KeyBits,
    /// User certificates to issue in every realm (repeatable); default alice and bob.
    #[arg(long = "user", value_name = "NAME")]
    users: Vec<String>,
}

/// RSA key sizes Choria deployments use.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum KeyBits {
    /// 2048 bits.
    #[value(name = "2048")]
    Bits2048,
    /// 4096 bits.
    #[value(name = "4096")]
    Bits4096,
}

/// Runs a certificate command.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Dev(args) = command;
    let mut options = DevPkiOptions {
        force: args.force,
        key_size: match args.key_bits {
            KeyBits::Bits2048 => rcgen::RsaKeySize::_2048,
            KeyBits::Bits4096 => rcgen::RsaKeySize::_4096,
        },
        ..DevPkiOptions::default()
    };
    if !args.users.is_empty() {
        options.users = args.users;
    }
    let pki = devpki::generate(&args.dir, &options)?;
    for (name, realm) in &pki.realms {
        println!("{name:<8} CA {}", realm.ca.display());
        for (user, pair) in &realm.users {
            println!("{:<8} user {user}: {}", "", pair.cert.display());
        }
        if let Some(privileged) = &realm.privileged {
            println!("{:<8} privileged signer: {}", "", privileged.cert.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
