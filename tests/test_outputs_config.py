"""The hardware: section: located errors, board profiles, backends, patterns, quiet hours."""

from __future__ import annotations

import asyncio
import itertools
from datetime import time as dtime
from pathlib import Path

import pytest

from pingr.config import ConfigError, parse_config
from pingr.outputs.backend import PinsUnavailable, open_backend
from pingr.outputs.boards import board_names, load_board
from pingr.outputs.config import HardwareConfig, factory_names
from pingr.outputs.kinds import PatternConfig, in_quiet_hours, parse_quiet_hours
from pingr.outputs.patterns import Player, steps


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml")
    return info.value.errors


def test_yaml_on_off_keys_and_words_are_understood():
    cfg = parse_config("""
hardware:
  backend: mock
  outputs:
    - name: siren
      type: relay
      pin: GPIO26
      active_high: false
      safe_state: off
      audible: true
      pattern: {type: beep, count: 2, on: 300ms, off: 200ms, repeat: 5s}
""")
    out = cfg.hardware.outputs[0]
    assert out.pin == 26 and out.safe_state == "off" and out.is_audible
    assert (out.pattern.on, out.pattern.off, out.pattern.repeat) == (0.3, 0.2, 5.0)


@pytest.mark.parametrize(("yaml_body", "where", "message"), [
    ("    - {name: a, type: relay, pin: 28}", "p.yaml:4:30: hardware.outputs[0].pin",
     "unknown pin 28: GPIO pins are BCM 0-27"),
    ("    - {name: a, type: relay, pin: 5}\n    - {name: b, type: led, pin: GPIO5}",
     "p.yaml:5:28: hardware.outputs[1].pin", "pin 5 is already used by hardware.outputs[0].pin"),
    ("    - {name: a, type: relay, pin: 5}\n  buttons:\n    - {pin: 5}",
     "p.yaml:6:8: hardware.buttons[0].pin", "pin 5 is already used by hardware.outputs[0].pin"),
    ("    - {name: a, type: relay, pin: 5, pattern: pulse}",
     "p.yaml:4:38: hardware.outputs[0].pattern", "a pulse needs PWM: a relay cannot fade"),
    ("    - {name: a, type: tower, pin: 5}", "p.yaml:4:30: hardware.outputs[0].pin",
     "a tower has several pins"),
    ("    - {name: a, type: tower, pins: {green: 5, blue: 6}}",
     "p.yaml:4:47: hardware.outputs[0].pins.blue", "unknown tower pin 'blue'"),
    ("    - {name: a, type: tower, pins: {green: 5}, when: alert}",
     "p.yaml:4:48: hardware.outputs[0].when", "a tower shows every state"),
    ("    - {name: a, type: relay, pin: 5, when: healthy, safe_state: on}",
     "p.yaml:4:53: hardware.outputs[0].safe_state", "must be off when pingr stops"),
    ("    - {name: a, type: buzzer, pin: 5, when: heartbeat}",
     "p.yaml:4:7: hardware.outputs[0].audible", "cannot be audible"),
    ("    - {name: a, type: relay, pin: 5, pattern: {type: blink, count: 2}}",
     "p.yaml:4:61: hardware.outputs[0].pattern.count", "'count' does not apply to a blink"),
    ("    - {name: a, type: relay, pin: 5, pattern: {type: beep, count: 3, repeat: 1s}}",
     "p.yaml:4:70: hardware.outputs[0].pattern.repeat", "shorter than one burst"),
    ("    - {name: a, type: relay, pin: 5, when: sometimes}",
     "p.yaml:4:38: hardware.outputs[0].when", "unknown when 'sometimes'"),
    ("    - {name: a, type: relay, pin: ch1}", "p.yaml:4:30: hardware.outputs[0].pin",
     "set `hardware.board`"),
    ("    - {name: a, type: led, pin: 5, quiet_hours: 22:00-07:00}",
     "p.yaml:4:36: hardware.outputs[0].quiet_hours", "mute audible outputs only"),
    ("    - {name: a, type: tower, pins: {green: 5}, colors: {alert: red}}",
     "p.yaml:4:64: hardware.outputs[0].colors.alert.color", "this tower has no red lamp"),
    ("    - {name: a, type: relay, pin: 5, tone: 440}", "p.yaml:4:38: hardware.outputs[0].tone",
     "`tone` applies to buzzers only"),
    ("    - {name: a, type: relay, pin: 5}\n    - {name: a, type: relay, pin: 6}",
     "p.yaml:5:8: hardware.outputs[1].name", "duplicate output name 'a'"),
])
def test_bad_outputs_are_located(yaml_body, where, message):
    errors = errors_of(f"hardware:\n  backend: mock\n  outputs:\n{yaml_body}\n")
    assert len(errors) == 1, errors
    assert errors[0].startswith(where + ": "), errors[0]
    assert message in errors[0]


def test_unknown_backend_board_quiet_hours_and_selector_target():
    errors = errors_of(
        "hardware:\n  backend: gpio9000\n  board: nope\n  quiet_hours: 25:00-07:00\n")
    assert errors[0].startswith("p.yaml:2:3: hardware.backend: unknown backend 'gpio9000'")
    assert "mock" in errors[0] and "lgpio" in errors[0]
    assert errors[1].startswith("p.yaml:3:3: hardware.board: unknown board 'nope'")
    assert "waveshare-rpi-relay-board" in errors[1]
    assert errors[2].startswith("p.yaml:4:3: hardware.quiet_hours: invalid quiet_hours")
    errors = errors_of("""
targets:
  - {name: web, type: tcp, host: 127.0.0.1, port: 80}
hardware:
  outputs:
    - {name: a, type: relay, pin: 5, when: {targets: [web, db]}}
""")
    assert errors == ["p.yaml:6:60: hardware.outputs[0].when.targets[1]: "
                      "output selector names unknown target 'db'"]


def test_board_profile_channels_and_polarity():
    cfg = HardwareConfig.model_validate({
        "board": "waveshare-rpi-relay-board",
        "outputs": [
            {"name": "siren", "type": "relay", "pin": "ch1"},
            {"name": "lamp", "type": "relay", "pin": 20},  # ch2 by number: still active-low
            {"name": "led", "type": "led", "pin": 4},  # not on the board: active-high
        ],
    })
    siren, lamp, led = cfg.outputs
    assert (siren.pin, siren.active_high) == (26, False)
    assert (lamp.pin, lamp.active_high) == (20, False)
    assert (led.pin, led.active_high) == (4, True)
    with pytest.raises(ValueError, match="has no channel 'ch9': it has ch1, ch2, ch3"):
        HardwareConfig.model_validate({"board": "waveshare-rpi-relay-board",
                                       "outputs": [{"name": "x", "type": "relay", "pin": "ch9"}]})


def test_every_shipped_board_profile_loads_with_valid_distinct_pins():
    assert "waveshare-rpi-relay-board" in board_names() and len(board_names()) >= 4
    for name in board_names():
        board = load_board(name)
        pins = [c.pin for c in board.channels.values()]
        assert pins and len(pins) == len(set(pins)) and all(0 <= p <= 27 for p in pins)
    ws = load_board("waveshare-rpi-relay-board")
    assert [(c.pin, c.active_high) for c in ws.channels.values()] == [
        (26, False), (20, False), (21, False)]
    # A tower from the Traffic HAT's own lamps, by name.
    cfg = HardwareConfig.model_validate({"board": "pi-supply-traffic-hat", "outputs": [
        {"name": "t", "type": "tower", "pins": {"green": "green", "amber": "amber", "red": "red"}},
        {"name": "b", "type": "buzzer", "pin": "buzzer"}], "buttons": [{"pin": "button"}]})
    assert cfg.outputs[0].pin_map() == {"green": 22, "amber": 23, "red": 24}
    assert cfg.buttons[0].pin == 25


def test_quiet_hours_wrap_midnight():
    span = parse_quiet_hours("22:00-07:00")
    assert in_quiet_hours(span, dtime(23, 30)) and in_quiet_hours(span, dtime(6, 59))
    assert not in_quiet_hours(span, dtime(7, 0)) and not in_quiet_hours(span, dtime(12, 0))
    day = parse_quiet_hours("12:00-13:30")
    assert in_quiet_hours(day, dtime(12, 0)) and not in_quiet_hours(day, dtime(13, 30))
    for bad in ("7-8", "22:00-22:00", "24:00-01:00"):
        with pytest.raises(ValueError):
            parse_quiet_hours(bad)


def test_pattern_steps():
    beep = PatternConfig(type="beep", count=2, on=0.1, off=0.2, repeat=1.0)
    assert list(itertools.islice(steps(beep), 6)) == [
        (1.0, 0.1), (0.0, 0.2), (1.0, 0.1), (0.0, pytest.approx(0.6)), (1.0, 0.1), (0.0, 0.2)]
    once = PatternConfig(type="beep", count=2, on=0.1, off=0.2)
    assert list(steps(once)) == [(1.0, 0.1), (0.0, 0.2), (1.0, 0.1), (0.0, None)]
    pulse = list(itertools.islice(steps(PatternConfig(type="pulse", fade_in=0.2, fade_out=0.2)),
                                  10))
    assert [round(v, 2) for v, _ in pulse] == [0.2, 0.4, 0.6, 0.8, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    assert list(steps(PatternConfig())) == [(1.0, None)]


async def test_player_writes_first_level_at_once_and_keeps_time():
    writes: list[tuple[float, float]] = []
    loop = asyncio.get_running_loop()
    player = Player(lambda v: writes.append((loop.time(), v)), "t")
    start = loop.time()
    player.play(steps(PatternConfig(type="blink", on=0.05, off=0.05)))
    assert writes == [(writes[0][0], 1.0)] and writes[0][0] - start < 0.001
    await asyncio.sleep(0.52)
    player.cancel()
    n = len(writes)
    await asyncio.sleep(0.12)
    assert len(writes) == n  # cancelled means quiet
    assert [v for _, v in writes[:4]] == [1.0, 0.0, 1.0, 0.0]
    # Deadlines are absolute: ten toggles take 0.5 s, not 0.5 s plus scheduling delays.
    assert abs((writes[10][0] - writes[0][0]) - 0.5) < 0.04


def test_backend_auto_off_a_pi_refuses_instead_of_mocking(tmp_path):
    """No silent MockFactory: off a Pi, `auto` is an error that names the cause and the fix."""
    with pytest.raises(PinsUnavailable) as err:
        open_backend("auto", model_file=tmp_path / "absent")
    assert err.value.cause.startswith("not a Raspberry Pi (no ")
    assert "hardware.backend: mock" in err.value.fix
    assert err.value.cause in str(err.value) and err.value.fix in str(err.value)
    assert {"mock", "lgpio", "rpigpio", "native"} <= set(factory_names())


def test_backend_auto_on_a_pi_tries_real_libraries(tmp_path):
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    try:
        backend = open_backend("auto", model_file=model)
    except PinsUnavailable as exc:
        # Not really a Pi, or no library could open a chip: said, never mocked.
        assert exc.cause.startswith("Raspberry Pi 4 Model B Rev 1.4: no GPIO library could open")
        assert "lgpio: " in exc.cause and "native: " in exc.cause
        assert exc.fix.endswith("set hardware.backend: mock")
    else:
        # A Pi, or a machine where a GPIO library opened a chip: the real thing.
        assert backend.real and backend.name in ("lgpio", "rpigpio", "pigpio", "native")
        backend.close()


def test_backend_failures_name_the_fix(tmp_path, monkeypatch):
    from pingr.outputs import backend as mod

    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 3 Model B Rev 1.2\0")

    def no_lgpio(name, pwm_pins):
        if name == "lgpio":
            raise ModuleNotFoundError("No module named 'lgpio'")
        raise PermissionError(13, "Permission denied", "/dev/gpiomem")

    monkeypatch.setattr(mod, "_named", no_lgpio)
    with pytest.raises(PinsUnavailable) as err:
        open_backend("auto", model_file=model)
    assert "lgpio: No module named 'lgpio'" in err.value.cause
    assert "pip install lgpio" in err.value.fix and "DeviceAllow=char-gpiochip" in err.value.fix

    def lgpio_fails(name, pwm_pins):
        raise OSError("can not open gpiochip")

    monkeypatch.setattr(mod, "_named", lgpio_fails)
    # A named factory that cannot open is the same loud error, never a fallback.
    with pytest.raises(PinsUnavailable) as err:
        open_backend("lgpio", model_file=model)
    assert err.value.cause == ("the configured pin factory lgpio could not open the pins "
                               "(lgpio: can not open gpiochip)")
    assert "pip install lgpio" not in err.value.fix
    assert "/dev/gpiochip*" in err.value.fix


def test_backend_mock_only_when_configured():
    backend = open_backend("mock")
    assert (backend.name, backend.real) == ("mock", False)
    assert backend.reason == "mock pins: nothing physical switches"
    backend.close()


def test_backend_mock_gives_pwm_pins_only_where_needed():
    from gpiozero.pins.mock import MockPWMPin

    backend = open_backend("mock", pwm_pins=[12])
    assert isinstance(backend.factory.pin(12), MockPWMPin)
    assert not isinstance(backend.factory.pin(13), MockPWMPin)
    backend.close()


def test_example_hardware_section_in_the_docs_is_valid():
    root = Path(__file__).resolve().parent.parent
    text = (root / "hardware" / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    assert blocks, "hardware/README.md shows example configs"
    for block in blocks:
        parse_config(block, "hardware/README.md")
