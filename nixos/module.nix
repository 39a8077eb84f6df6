# NixOS module: services.grove runs `grove serve` on a store in /var/lib/grove.
#
#   imports = [ ./nixos/module.nix ];
#   services.grove = {
#     enable = true;
#     settings.server = { host = "0.0.0.0"; port = 8080; };
#     writeTokenFile = "/run/secrets/grove-write-token";   # enables `nix copy --to`
#     settings.store.remotes = [ "http://other-grove:8080/git/" ];   # read-through from peers
#     settings.store.upstreams = [
#       { url = "https://cache.nixos.org"; trusted_public_keys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ]; timeout_s = 10; }
#     ];
#   };
{ config, lib, pkgs, ... }:

let
  cfg = config.services.grove;
  yaml = pkgs.formats.yaml { };
  settings = lib.recursiveUpdate cfg.settings {
    server = lib.optionalAttrs (cfg.writeTokenFile != null) { write_token_file = "/run/credentials/grove.service/write-token"; }
      // lib.optionalAttrs (cfg.readTokenFile != null) { read_token_file = "/run/credentials/grove.service/read-token"; };
  };
  configFile = yaml.generate "grove.yaml" settings;
in
{
  options.services.grove = {
    enable = lib.mkEnableOption "Grove, a Nix binary cache stored in Git";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ./package.nix { };
      description = "The grove package.";
    };

    settings = lib.mkOption {
      type = yaml.type;
      default = { };
      description = ''
        Grove's YAML configuration (see README.md): log_level, store.*, server.*.
        Secrets belong in writeTokenFile/readTokenFile, not here: this ends up in the Nix store.
      '';
    };

    writeTokenFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = "File with the token that uploads (`nix copy --to`) must present.";
    };

    readTokenFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = "File with the token that reads must present; reads are public without one.";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open server.port in the firewall.";
    };
  };

  config = lib.mkIf cfg.enable {
    services.grove.settings = {
      store.path = lib.mkDefault "/var/lib/grove";
      server.host = lib.mkDefault "127.0.0.1";
      server.port = lib.mkDefault 8080;
    };

    systemd.services.grove = {
      description = "Grove Nix binary cache";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      # git serves /git/ (http-backend) and fetches from store.remotes.
      path = [ pkgs.git ];
      serviceConfig = {
        ExecStart = "${lib.getExe cfg.package} -c ${configFile} serve";
        DynamicUser = true;
        StateDirectory = "grove";
        StateDirectoryMode = "0700";
        LoadCredential =
          lib.optional (cfg.writeTokenFile != null) "write-token:${cfg.writeTokenFile}"
          ++ lib.optional (cfg.readTokenFile != null) "read-token:${cfg.readTokenFile}";
        Restart = "on-failure";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
      };
    };

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ cfg.settings.server.port ];
  };
}
