// CCDM keyframe timeline: the event handlers, methods of the Timeline in ccdm_timeline.js, which mixes them in at
// init (the handlers run only after that, so the load order does not matter).
(function () {
    'use strict';

    const parts = window.ccdmTimelineParts = window.ccdmTimelineParts || {};

    function hasFiles(event) {
        return Boolean(event.dataTransfer) && Array.from(event.dataTransfer.types || []).includes('Files');
    }

    parts.events = {
        onClick(event) {
            const target = event.target;
            const card = target.closest('.ccdm-keyframe');
            if (target.closest('.ccdm-zoom-in')) this.zoom(1);
            else if (target.closest('.ccdm-zoom-out')) this.zoom(-1);
            else if (target.closest('.ccdm-zoom-fit')) this.zoom(0);
            else if (target.closest('.ccdm-delete') && this.selected !== null) this.remove(this.selected);
            else if (target.closest('.ccdm-card-delete') && card) this.remove(Number(card.dataset.frame));
            else if (target.closest('.ccdm-pin')) this.pin(Number(target.closest('.ccdm-pin').dataset.frame));
            else if (target.closest('.ccdm-send-controlnet') && card) this.sendToControlNet(Number(card.dataset.frame));
            else if (target.closest('.ccdm-slot') && !card) this.select(null);
        },

        onInput(event) {
            const target = event.target;
            const card = target.closest('.ccdm-keyframe');
            if (target.classList.contains('ccdm-schedule')) this.onScheduleInput(target.dataset.kind);
            else if (card && target.classList.contains('ccdm-strength')) this.onStrengthInput(card, target);
            else if (card && target.matches('.ccdm-cn-weight, .ccdm-cn-radius')) this.onControlNetNumber(card, target);
            else if (card && target.classList.contains('ccdm-prompt')) {
                this.find(Number(card.dataset.frame)).prompt = target.value || null;
                this.commit({render: false});
            }
        },

        onChange(event) {
            const target = event.target;
            const card = target.closest('.ccdm-keyframe');
            if (card && target.classList.contains('ccdm-strength')) {
                target.value = parts.text.formatNumber(this.find(Number(card.dataset.frame)).strength);
                target.classList.remove('ccdm-invalid');
            } else if (card && target.matches('.ccdm-cn-module, .ccdm-cn-model')) {
                this.onControlNetSelect(card, target);
            } else if (card && target.matches('.ccdm-cn-weight, .ccdm-cn-radius')) {
                this.resetControlNetNumber(card, target); // an invalid value left behind: back to the stored one
            }
        },

        onStrengthInput(card, input) {
            const value = Number(input.value);
            const valid = input.value.trim() !== '' && Number.isFinite(value) && value >= 0 && value <= 1;
            input.classList.toggle('ccdm-invalid', !valid);
            input.title = valid ? 'Strength (0-1)' : 'Strength must be a number in 0..1';
            if (!valid) return;
            this.find(Number(card.dataset.frame)).strength = value;
            this.commit({render: false});
        },

        onScheduleInput(kind) {
            const text = parts.text;
            let parsed;
            try {
                parsed = (kind === 'strength' ? text.parseStrengths : text.parsePrompts)(this.texts[kind].value,
                    this.frames);
            } catch (err) {
                this.markText(kind, err.message); // the timeline keeps its keyframes
                return;
            }
            this.markText(kind, '');
            const base = this.base || this.keyframes.map((kf) => Object.assign({}, kf));
            this.base = base;
            this.keyframes = (kind === 'strength' ? text.applyStrengths : text.applyPrompts)(base, parsed);
            this.commit({skipText: kind});
        },

        onFocusIn(event) {
            const card = event.target.closest('.ccdm-keyframe');
            if (card && Number(card.dataset.frame) !== this.selected) this.select(Number(card.dataset.frame));
            if (event.target.classList.contains('ccdm-schedule')) {
                this.base = this.keyframes.map((kf) => Object.assign({}, kf));
            }
        },

        onFocusOut(event) {
            const kind = event.target.dataset && event.target.dataset.kind;
            if (!event.target.classList.contains('ccdm-schedule')) return;
            this.base = null;
            if (!this.texts[kind].classList.contains('ccdm-invalid')) this.renderTexts();
        },

        onKey(event) {
            if (event.target.matches('input, textarea, select') || this.selected === null) return;
            if (event.key === 'Delete' || event.key === 'Backspace') this.remove(this.selected);
            else if (event.key === 'ArrowLeft') this.nudge(event.shiftKey ? -10 : -1);
            else if (event.key === 'ArrowRight') this.nudge(event.shiftKey ? 10 : 1);
            else if (event.key === 'Escape') this.select(null);
            else return;
            event.preventDefault();
        },

        onPointerDown(event) {
            const card = event.target.closest('.ccdm-keyframe');
            if (!card || event.button !== 0) return;
            const frame = Number(card.dataset.frame);
            this.select(frame);
            if (event.target.closest('input, button, select')) return; // editing, not dragging
            this.drag = {frame: frame, x: event.clientX, moved: false};
            card.setPointerCapture(event.pointerId);
            card.focus({preventScroll: true});
            event.preventDefault();
        },

        onPointerMove(event) {
            if (!this.drag) return;
            if (Math.abs(event.clientX - this.drag.x) > 4) this.drag.moved = true;
            if (!this.drag.moved) return;
            const box = this.scroller.getBoundingClientRect();
            if (event.clientX < box.left + 24) this.scroller.scrollLeft -= this.slotWidth;
            if (event.clientX > box.right - 24) this.scroller.scrollLeft += this.slotWidth;
            this.highlight(Math.min(this.frames - 1, Math.max(0, this.frameAt(event.clientX))));
        },

        onPointerUp(event) {
            const drag = this.drag;
            if (!drag) return;
            this.drag = null;
            this.highlight(null);
            const to = Math.min(this.frames - 1, Math.max(0, this.frameAt(event.clientX)));
            if (drag.moved && event.type === 'pointerup' && to !== drag.frame) this.move(drag.frame, to);
            else if (this.pending) this.render();
        },

        onDragOver(event) {
            if (!hasFiles(event)) return;
            event.preventDefault();
            event.stopPropagation();
            event.dataTransfer.dropEffect = 'copy';
            this.highlight(this.frameOfEvent(event));
        },

        onDragLeave(event) {
            if (!this.root.contains(event.relatedTarget)) this.highlight(null);
        },

        onDrop(event) {
            if (!hasFiles(event)) return;
            event.preventDefault();
            event.stopPropagation(); // not the WebUI's own image drop handling
            this.highlight(null);
            const frame = this.frameOfEvent(event);
            if (!(frame >= 0 && frame < this.frames)) {
                return this.status('Drop images on a frame of the clip (0..' + (this.frames - 1) + ').', true);
            }
            this.addFiles(event.dataTransfer.files, frame);
        },

        onWheel(event) {
            if (event.ctrlKey) {
                event.preventDefault();
                this.zoom(event.deltaY < 0 ? 1 : -1);
            } else if (!event.deltaX && this.track.scrollWidth > this.scroller.clientWidth) {
                event.preventDefault();
                this.scroller.scrollLeft += event.deltaY;
            }
        },
    };
})();
