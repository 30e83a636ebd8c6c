"""The embeddable widget's assets (talk.js, talk-core.js), served by web at /widget/ and shipped in the wheel."""
