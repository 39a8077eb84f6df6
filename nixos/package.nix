# Grove as a Nix package. Tests are not run in the build: they need a real nix, FUSE and the
# network-free Debian dataset (see integration/run).
{ lib, rustPlatform }:

rustPlatform.buildRustPackage {
  pname = "grove";
  version = "0.1.0";
  src = lib.cleanSource ../.;
  cargoLock.lockFile = ../Cargo.lock;
  doCheck = false;
  meta = {
    description = "A Nix binary cache whose store is a Git repository";
    mainProgram = "grove";
    license = with lib.licenses; [ mit asl20 ];
  };
}
