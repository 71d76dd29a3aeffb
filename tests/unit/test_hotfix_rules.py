"""The hotfix plug-in's rules: config validation, planning per node, exit codes, commands, manifest."""

from __future__ import annotations

import shlex
from datetime import timedelta

import pytest

from cau.domain.updates import UpdateOutcome
from cau.errors import ConfigError
from cau.plugins.exitcodes import ExitClass
from cau.plugins.hotfix_rules import (
    HotfixConfig,
    HotfixRule,
    classify_exit,
    parse_hotfix_config,
    parse_manifest,
    plan_hotfixes,
    render_command,
    verify_manifest,
    writable_by_others,
)

CONFIG = """
installer_timeout = "20m"

[[rules]]
match = "*.deb"
command = "dpkg -i $update$"
success = [0]

[[rules]]
name = "scripts"
match = ["*.sh", "*.bash"]
command = "sh $update$"
success_restart_needed = [194]
already_installed = [3]
not_applicable = [4]

[[rules]]
folder = "firmware"
match = "*.cap"
command = "fwupdtool install --force $update$"
success_restart_needed = [0]
failed_restart_needed = [2]
timeout = "1h"

[[rules]]
folder = "bios"
command = "/opt/vendor/flash --file=$update$"
always_restart = true
"""

FILES = [
    "hotfix.toml",
    "SHA256SUMS",
    "README.txt",
    "_all/b-fix.deb",
    "_all/a-fix.sh",
    "_all/notes.pdf",
    "_all/firmware/nic.cap",
    "_all/firmware/release-notes.txt",
    "_all/tools/helper.deb",
    "_all/.hidden.deb",
    "_all/firmware/deep/x.cap",
    "node1/node1-only.deb",
    "node1/bios/v2.bin",
    "node2/node2-only.deb",
    "NODE1/upper-case-folder.deb",
]


@pytest.fixture
def config() -> HotfixConfig:
    return parse_hotfix_config(CONFIG)


def test_config_defaults_and_per_rule_values(config: HotfixConfig) -> None:
    deb, scripts, firmware, bios = config.rules
    assert config.installer_timeout == timedelta(minutes=20)
    assert deb.match == ["*.deb"] and deb.success == [0] and deb.folder is None
    assert scripts.label == "scripts" and scripts.success == [0]
    assert firmware.success == []  # 0 means "restart needed" here, so it is not also "success"
    assert bios.match == ["*"] and bios.label == "bios/*"
    assert config.timeout_for(firmware) == timedelta(hours=1)
    assert config.timeout_for(deb) == timedelta(minutes=20)
    assert parse_hotfix_config(
        '[[rules]]\nmatch = "*.deb"\ncommand = "dpkg -i $update$"\n'
    ).installer_timeout == (timedelta(minutes=30))


def test_plan_orders_all_first_then_the_node_and_explains_every_skip(config: HotfixConfig) -> None:
    plan = plan_hotfixes(FILES, "node1", config)
    rows = [(i.path, i.rule.label if i.rule else None, i.skipped) for i in plan]
    assert rows == [
        ("_all/.hidden.deb", None, "hidden file"),
        ("_all/a-fix.sh", "scripts", None),
        ("_all/b-fix.deb", "*.deb", None),
        ("_all/firmware/deep/x.cap", None, "nested deeper than one folder below the scope"),
        ("_all/firmware/nic.cap", "firmware/*.cap", None),
        (
            "_all/firmware/release-notes.txt",
            None,
            "no rule for folder 'firmware' matches 'release-notes.txt'",
        ),
        ("_all/notes.pdf", None, "no rule matches 'notes.pdf'"),
        ("_all/tools/helper.deb", None, "no folder rule for 'tools'"),
        ("NODE1/upper-case-folder.deb", "*.deb", None),  # node folders match the name in any case
        ("node1/bios/v2.bin", "bios/*", None),
        ("node1/node1-only.deb", "*.deb", None),
        ("README.txt", None, "outside _all/ and the node folders: ignored"),
    ]
    assert not any(i.path.startswith("node2/") for i in plan)  # another node's files are not ours
    applied = [i for i in plan if i.applies]
    assert [i.scope for i in applied] == ["_all", "_all", "_all", "NODE1", "node1", "node1"]
    assert [i.rule_index for i in applied] == [1, 0, 2, 0, 3, 0]
    assert next(i for i in applied if i.folder == "firmware").timeout == timedelta(hours=1)


def test_plan_for_another_node_and_for_a_node_without_a_folder(config: HotfixConfig) -> None:
    node2 = [i.path for i in plan_hotfixes(FILES, "node2", config) if i.applies]
    assert node2 == ["_all/a-fix.sh", "_all/b-fix.deb", "_all/firmware/nic.cap", "node2/node2-only.deb"]
    node3 = [i.path for i in plan_hotfixes(FILES, "node3", config) if i.applies]
    assert node3 == ["_all/a-fix.sh", "_all/b-fix.deb", "_all/firmware/nic.cap"]


def test_a_fully_qualified_node_name_reads_its_short_folder_too(config: HotfixConfig) -> None:
    applied = [
        i.path for i in plan_hotfixes(FILES, "Node1.example.com", config) if i.scope not in (None, "_all")
    ]
    assert applied == ["NODE1/upper-case-folder.deb", "node1/bios/v2.bin", "node1/node1-only.deb"]


def test_an_ip_address_node_name_is_not_shortened(config: HotfixConfig) -> None:
    plan = plan_hotfixes(["10/x.deb", "10.0.0.5/y.deb"], "10.0.0.5", config)
    assert [i.path for i in plan] == ["10.0.0.5/y.deb"]


def test_the_first_matching_rule_wins() -> None:
    config = parse_hotfix_config(
        '[[rules]]\nmatch = "special-*.deb"\ncommand = "special $update$"\n'
        '[[rules]]\nmatch = "*.deb"\ncommand = "dpkg -i $update$"\n'
    )
    plan = plan_hotfixes(["_all/special-1.deb", "_all/plain.deb"], "n1", config)
    assert [(i.path, i.rule_index) for i in plan] == [("_all/plain.deb", 1), ("_all/special-1.deb", 0)]


def test_unsafe_paths_are_skipped(config: HotfixConfig) -> None:
    plan = plan_hotfixes(["/etc/passwd", "_all/../x.deb"], "node1", config)
    assert all(i.skipped == "not a path inside the hotfix root" for i in plan)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, ExitClass.SUCCESS),
        (194, ExitClass.SUCCESS_RESTART_NEEDED),
        (3, ExitClass.ALREADY_INSTALLED),
        (4, ExitClass.NOT_APPLICABLE),
        (1, ExitClass.FAILED),
        (255, ExitClass.FAILED),
    ],
)
def test_exit_codes_of_the_scripts_rule(config: HotfixConfig, code: int, expected: ExitClass) -> None:
    assert classify_exit(code, config.rules[1]) is expected


def test_exit_codes_of_restarting_rules(config: HotfixConfig) -> None:
    firmware, bios = config.rules[2], config.rules[3]
    assert classify_exit(0, firmware) is ExitClass.SUCCESS_RESTART_NEEDED
    failed = classify_exit(2, firmware)
    assert failed is ExitClass.FAILED_RESTART_NEEDED and failed.restart_required
    assert failed.outcome is UpdateOutcome.FAILED
    assert classify_exit(0, bios) is ExitClass.SUCCESS_RESTART_NEEDED  # always_restart
    assert classify_exit(1, bios) is ExitClass.FAILED and not classify_exit(1, bios).restart_required


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[rules]]\nmatch = "*.deb"\ncomand = "dpkg -i $update$"\n', "rules.0.comand: unknown key"),
        ('[[rules]]\nmatch = "*.deb"\n', "rules.0.command: Field required"),
        ('[[rules]]\nmatch = "*.deb"\ncommand = "dpkg -i"\n', "rules.0.command: .*must contain \\$update\\$"),
        (
            '[[rules]]\nmatch = "*.deb"\ncommand = "dpkg -i \\"$update$\\""\n',
            "rules.0.command: .*inside quotes",
        ),
        ("[[rules]]\nmatch = '*.sh'\ncommand = \"sh -c 'x $update$'\"\n", "inside quotes"),
        (
            '[[rules]]\nmatch = "*.sh"\ncommand = "sh $update$"\nsuccess_restart_needed = [3010]\n',
            "3010 cannot happen",
        ),
        ('[[rules]]\nmatch = "*.sh"\ncommand = "sh $update$"\nsuccess = [0]\nnot_applicable = [0]\n', "both"),
        ('[[rules]]\nmatch = "*.sh"\ncommand = "sh $update$"\nsuccess = []\n', "no exit code means success"),
        ('[[rules]]\ncommand = "sh $update$"\n', "needs `match`"),
        ('[[rules]]\nfolder = "a/b"\ncommand = "sh $update$"\n', "rules.0.folder"),
        ('[[rules]]\nfolder = "_ALL"\ncommand = "sh $update$"\n', "rules.0.folder"),
        ('[[rules]]\nmatch = "sub/*.deb"\ncommand = "dpkg -i $update$"\n', "rules.0.match"),
        ('[[rules]]\nmatch = "*.deb"\ncommand = "dpkg -i $update$"\ntimeout = "0s"\n', "rules.0.timeout"),
        ('installer_timeout = "soon"\n[[rules]]\nmatch = "*"\ncommand = "x $update$"\n', "installer_timeout"),
        ("rules = []\n", "rules: List should have at least 1 item"),
        ("installer_timeout = \n", "not valid TOML"),
        ('extra = 1\n[[rules]]\nmatch = "*"\ncommand = "x $update$"\n', "extra: unknown key"),
    ],
)
def test_bad_configs_name_the_file_and_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_hotfix_config(text, "/srv/hotfix/hotfix.toml")
    assert str(caught.value).startswith("/srv/hotfix/hotfix.toml: ")


def test_render_quotes_spaces_and_single_quotes() -> None:
    path = "/var/lib/cau/hotfix/_all/it's a fix; rm -rf ~.deb"
    command = render_command("dpkg -i $update$ && echo done", path)
    assert shlex.split(command) == ["dpkg", "-i", path, "&&", "echo", "done"]
    assert render_command("flash --file=$update$", "/x/a b.bin") == "flash --file='/x/a b.bin'"
    assert render_command("install $update$", "/x/plain.deb") == "install /x/plain.deb"


@pytest.mark.parametrize(
    "template", ["dpkg -i /tmp/x.deb", 'dpkg -i "$update$"', "sh -c 'run $update$'", "a 'b"]
)
def test_render_refuses_templates_it_cannot_quote_safely(template: str) -> None:
    with pytest.raises(ConfigError):
        render_command(template, "/x")


def test_escaped_quotes_do_not_open_a_quote() -> None:
    assert render_command('echo \\" && run $update$', "/a b") == "echo \\\" && run '/a b'"


MANIFEST = (
    "# sha256sum output for the hotfix root\n"
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  hotfix.toml\n"
    "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08 *_all/a-fix.sh\n"
    "\\2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae  _all/odd\\nname.deb\n"
    "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9  ./node1/node1-only.deb\n"
)


def test_manifest_lines_text_binary_escaped_and_dotted() -> None:
    manifest = parse_manifest(MANIFEST)
    assert manifest == {
        "hotfix.toml": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "_all/a-fix.sh": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "_all/odd\nname.deb": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
        "node1/node1-only.deb": "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9",
    }


def test_verify_manifest_reports_every_kind_of_problem() -> None:
    manifest = parse_manifest(MANIFEST)
    digests = {
        "hotfix.toml": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "_all/a-fix.sh": "0" * 64,  # changed after the manifest was written
        "_all/new.deb": "1" * 64,  # dropped in without being listed
        "node1/node1-only.deb": "FCDE2B2EDBA56BF408601FB721FE9B5C338D10EE429EA04FAE5511B68FBF8FB9",
    }
    digests["SHA256SUMS"] = "2" * 64  # the manifest itself: never a problem
    assert verify_manifest(manifest, digests) == [
        "_all/a-fix.sh: sha256 mismatch (manifest 9f86d081884c…, file 000000000000…)",
        "_all/new.deb: not listed in the manifest",
        "_all/odd\nname.deb: listed in the manifest but missing",
    ]
    all_there = {
        **digests,
        "_all/a-fix.sh": manifest["_all/a-fix.sh"],
        "_all/odd\nname.deb": "2c26" + "b" * 60,
    }
    del all_there["_all/new.deb"]
    assert verify_manifest(manifest, all_there) == [
        "_all/odd\nname.deb: sha256 mismatch (manifest 2c26b46b68ff…, file 2c26bbbbbbbb…)"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc  file\n", "SHA256SUMS:1: not a sha256sum line"),
        ("# c\n" + "a" * 64 + "  /etc/passwd\n", "SHA256SUMS:2: '/etc/passwd' is not a path inside the root"),
        ("a" * 64 + "  _all/../x\n", "not a path inside the root"),
        ("a" * 64 + "  x\n" + "b" * 64 + "  ./x\n", "SHA256SUMS:2: 'x' is listed twice"),
    ],
)
def test_bad_manifests(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_manifest(text)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (0o755, False),
        (0o644, False),
        (0o700, False),
        (0o775, True),
        (0o757, True),
        (0o2770, True),
        (0o40777, True),
    ],
)
def test_writable_by_others(mode: int, expected: bool) -> None:
    assert writable_by_others(mode) is expected


def test_rules_are_values() -> None:
    rule = HotfixRule(match=["*.deb"], command="dpkg -i $update$")
    with pytest.raises(Exception, match="frozen"):
        rule.command = "rm $update$"  # type: ignore[misc]
