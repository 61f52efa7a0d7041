// CCDM keyframe timeline (txt2vid tab). One slot per frame; image files dropped on a slot become keyframe cards.
// The keyframes cross to Python as JSON through the hidden textbox #ccdm_keyframes_json plus a synthetic `input`
// event; Python writes it back the same way (paste), and a poll picks that up. Every element initialises once.
// Helpers and event handlers live in ccdm_timeline_util.js and ccdm_timeline_events.js; init() takes them from
// window.ccdmTimelineParts (the WebUI calls init through onUiLoaded, after all scripts have loaded).
(function () {
    'use strict';

    const parts = window.ccdmTimelineParts = window.ccdmTimelineParts || {};
    const ROOT_ID = 'ccdm_timeline';
    const SLOT_WIDTHS = [8, 12, 16, 24, 32, 48, 64, 96, 128];
    const COMPACT_BELOW = 64; // narrower slots show only the thumbnail (the selected card opens up)
    const LABEL_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500];
    const POLL_MS = 250;
    const CORE_FIELDS = ['frame', 'strength', 'prompt', 'image'];
    let instances = [];
    let pollTimer = null;
    let app, byId, el, button, text, images; // bound from the parts at init

    function serialise(kf) {
        const out = {frame: kf.frame, strength: kf.strength, prompt: kf.prompt || null, image: kf.image || null};
        for (const key of Object.keys(kf)) {
            if (!CORE_FIELDS.includes(key)) out[key] = kf[key]; // e.g. "controlnet": kept untouched
        }
        return out;
    }

    function niceStep(minimum) {
        return LABEL_STEPS.find((step) => step >= minimum) || LABEL_STEPS[LABEL_STEPS.length - 1];
    }

    // ---- one timeline ---------------------------------------------------------------------------------------

    class Timeline {
        constructor(root) {
            this.root = root;
            this.keyframes = [];
            this.selected = null;
            this.frames = 16;
            this.fps = 8;
            this.slotWidth = 0; // 0: fit to the visible width once the tab is shown
            this.autoFit = true; // until the user zooms, a new frame count fits the clip again
            this.lastState = null;
            this.base = null; // keyframes when a schedule text was focused: text edits apply to these
            this.frameUrls = [];
            this.drag = null;
            this.pending = false; // a render asked for during a drag
            this.maxSide = Number(root.dataset.maxSide) || 1024;
            this.cnJson = null; // the ControlNet options box's text; cnOptions: its lists, null without ControlNet
            this.cnOptions = null;
            this.build();
            this.bind();
            this.sync();
        }

        build() {
            this.root.replaceChildren();
            this.buildToolbar();
            this.scroller = el('div', 'ccdm-scroller');
            this.track = el('div', 'ccdm-track');
            this.scroller.appendChild(this.track);
            this.root.appendChild(this.scroller);
            this.buildTextForm();
        }

        buildToolbar() {
            const bar = el('div', 'ccdm-toolbar');
            bar.append(button('ccdm-zoom-out', '\u2212', 'Zoom out'), button('ccdm-zoom-in', '+', 'Zoom in'),
                button('ccdm-zoom-fit', 'Fit', 'Fit the clip to the width'));
            this.info = el('span', 'ccdm-info');
            this.deleteButton = button('ccdm-delete', 'Delete keyframe', 'Delete the selected keyframe (Delete key)');
            this.statusLine = el('span', 'ccdm-status');
            bar.append(this.info, this.deleteButton, this.statusLine);
            this.root.appendChild(bar);
        }

        buildTextForm() {
            const form = el('div', 'ccdm-text');
            this.texts = {};
            this.errors = {};
            const fields = [['strength', 'Strength schedule', '0:(1.0), 12:(0.6)'],
                ['prompt', 'Prompt schedule (JSON)', '{"0": "a cat", "12": "a dog"}']];
            for (const [kind, label, placeholder] of fields) {
                const box = el('label', 'ccdm-text-field');
                const area = el('textarea', 'ccdm-schedule ccdm-schedule-' + kind);
                area.rows = 2;
                area.placeholder = placeholder;
                area.dataset.kind = kind;
                area.spellcheck = false;
                this.texts[kind] = area;
                this.errors[kind] = el('div', 'ccdm-error ccdm-error-' + kind);
                box.append(el('span', 'ccdm-text-label', label), area, this.errors[kind]);
                form.appendChild(box);
            }
            this.root.appendChild(form);
        }

        bind() {
            const on = (type, fn) => this.root.addEventListener(type, fn.bind(this));
            on('click', this.onClick);
            on('input', this.onInput);
            on('change', this.onChange);
            on('focusin', this.onFocusIn);
            on('focusout', this.onFocusOut);
            on('keydown', this.onKey);
            on('pointerdown', this.onPointerDown);
            on('pointermove', this.onPointerMove);
            on('pointerup', this.onPointerUp);
            on('pointercancel', this.onPointerUp);
            on('dragover', this.onDragOver);
            on('dragleave', this.onDragLeave);
            on('drop', this.onDrop);
            this.scroller.addEventListener('wheel', this.onWheel.bind(this), {passive: false});
        }

        // -- the page around the timeline

        stateBox() {
            const box = byId(this.root.dataset.stateElem);
            return box ? box.querySelector('textarea') : null;
        }

        readNumber(elemId, fallback) {
            const box = byId(elemId);
            const input = box && box.querySelector('input[type=number]');
            const value = input ? Number(input.value) : NaN;
            return Number.isFinite(value) && value > 0 ? value : fallback;
        }

        galleryUrls() {
            const gallery = byId(this.root.dataset.galleryElem);
            if (!gallery) return [];
            let imgs = gallery.querySelectorAll('.grid-container .thumbnail-item img');
            if (!imgs.length) imgs = gallery.querySelectorAll('.thumbnail-item img');
            return Array.from(imgs, (img) => img.src);
        }

        sync() {
            if (!this.root.isConnected) return false;
            let dirty = this.pending || (this.slotWidth === 0 && this.scroller.clientWidth > 0);
            const frames = Math.min(1024, Math.round(this.readNumber(this.root.dataset.framesElem, this.frames)));
            const fps = this.readNumber(this.root.dataset.fpsElem, this.fps);
            if (frames !== this.frames || fps !== this.fps) {
                if (frames !== this.frames && this.autoFit) this.slotWidth = 0;
                [this.frames, this.fps, dirty] = [frames, fps, true];
            }
            const box = this.stateBox();
            if (box && box.value !== this.lastState) dirty = this.loadState(box.value) || dirty;
            const urls = this.galleryUrls();
            if (urls.join('\n') !== this.frameUrls.join('\n')) [this.frameUrls, dirty] = [urls, true];
            if (this.readControlNetOptions && this.readControlNetOptions()) dirty = true;
            if (dirty) this.render();
            return true;
        }

        // -- state

        find(frame) {
            return this.keyframes.find((kf) => kf.frame === frame) || null;
        }

        loadState(json) {
            this.lastState = json;
            let list;
            try {
                list = json.trim() ? JSON.parse(json) : [];
                if (!Array.isArray(list)) throw new Error('not a JSON list');
            } catch (err) {
                this.status('The keyframes state is unreadable (' + err.message + '); the timeline is kept.', true);
                return false;
            }
            this.keyframes = list.filter((kf) => kf && Number.isInteger(kf.frame))
                .map((kf) => Object.assign({}, kf, {strength: typeof kf.strength === 'number' ? kf.strength : 1}))
                .sort((a, b) => a.frame - b.frame);
            this.base = null;
            this.renderTexts();
            return true;
        }

        writeState() {
            const json = JSON.stringify(this.keyframes.map(serialise));
            this.lastState = json;
            const box = this.stateBox();
            if (!box || box.value === json) return;
            box.value = json;
            box.dispatchEvent(new Event('input', {bubbles: true}));
        }

        commit(options) {
            const opts = options || {};
            this.keyframes.sort((a, b) => a.frame - b.frame);
            if (this.selected !== null && !this.find(this.selected)) this.selected = null;
            this.writeState();
            this.renderTexts(opts.skipText);
            if (opts.render === false) this.renderToolbar(); else this.render();
        }

        // -- edits

        setImage(frame, dataUrl) {
            const kf = this.find(frame);
            if (kf) kf.image = dataUrl; // a new image keeps the card's strength, prompt and other fields
            else this.keyframes.push(Object.assign(text.newKeyframe(frame), {image: dataUrl}));
            this.selected = frame;
            this.commit();
        }

        move(from, to) {
            const kf = this.find(from);
            if (!kf || from === to || to < 0 || to >= this.frames) return;
            const other = this.find(to);
            if (other) other.frame = from; // dropping on a keyframe swaps the two
            kf.frame = to;
            this.selected = to;
            this.commit();
            this.focusCard(to);
        }

        nudge(step) {
            let to = this.selected + step;
            while (to >= 0 && to < this.frames && this.find(to)) to += Math.sign(step);
            if (to >= 0 && to < this.frames) this.move(this.selected, to);
        }

        remove(frame) {
            this.keyframes = this.keyframes.filter((kf) => kf.frame !== frame);
            if (this.selected === frame) this.selected = null;
            this.commit();
            this.root.focus();
        }

        select(frame) {
            this.selected = frame;
            this.track.querySelectorAll('.ccdm-keyframe').forEach((card) => {
                card.classList.toggle('selected', Number(card.dataset.frame) === frame);
            });
            this.renderToolbar();
        }

        focusCard(frame) {
            const card = this.track.querySelector('.ccdm-keyframe[data-frame="' + frame + '"]');
            if (card) card.focus({preventScroll: false});
        }

        async addFiles(files, frame) {
            const pictures = Array.from(files).filter((file) => file.type.startsWith('image/'));
            if (!pictures.length) return this.status('Only image files can become keyframes.', true);
            for (let i = 0; i < pictures.length && frame + i < this.frames; i++) {
                try {
                    this.setImage(frame + i, await images.toDataUrl(pictures[i], this.maxSide));
                } catch (err) {
                    this.status(pictures[i].name + ': ' + err.message, true);
                }
            }
        }

        async pin(frame) {
            const src = this.frameUrls[frame];
            if (!src) return;
            try {
                this.setImage(frame, await images.urlToDataUrl(src, this.maxSide));
                this.status('Frame ' + frame + ' pinned as a keyframe.', false);
            } catch (err) {
                this.status('Pin failed: ' + err.message, true);
            }
        }

        status(message, isError) {
            this.statusLine.textContent = message;
            this.statusLine.classList.toggle('ccdm-status-error', Boolean(isError));
        }

        // -- rendering

        slotCount() {
            const last = this.keyframes.length ? this.keyframes[this.keyframes.length - 1].frame + 1 : 0;
            return Math.max(this.frames, last); // keyframes past the end stay visible (marked) until moved
        }

        fitWidth() {
            const ideal = (this.scroller.clientWidth - 2) / this.frames;
            const fits = SLOT_WIDTHS.filter((w) => w <= ideal);
            return Math.max(SLOT_WIDTHS[1], fits.length ? fits[fits.length - 1] : SLOT_WIDTHS[1]);
        }

        render() {
            if (this.drag) { this.pending = true; return; }
            this.pending = false;
            if (this.slotWidth === 0 && this.scroller.clientWidth > 0) this.slotWidth = this.fitWidth();
            const width = this.slotWidth || 48;
            this.labelEvery = niceStep(32 / width);
            this.secondEvery = niceStep(40 / (width * this.fps));
            const frag = document.createDocumentFragment();
            for (let frame = 0; frame < this.slotCount(); frame++) frag.appendChild(this.renderSlot(frame));
            this.track.replaceChildren(frag);
            this.track.style.setProperty('--ccdm-slot', width + 'px');
            this.track.classList.toggle('ccdm-compact', width < COMPACT_BELOW);
            this.track.classList.toggle('ccdm-with-cn', Boolean(this.cnOptions));
            this.renderToolbar();
        }

        renderSlot(frame) {
            const slot = el('div', 'ccdm-slot');
            slot.dataset.frame = frame;
            slot.title = 'frame ' + frame + ' \u00b7 ' + (frame / this.fps).toFixed(2) + ' s';
            if (frame >= this.frames) slot.classList.add('ccdm-outside');
            const second = Math.floor(frame / this.fps);
            const startsSecond = frame === 0 || second !== Math.floor((frame - 1) / this.fps);
            if (startsSecond) slot.classList.add('ccdm-second');
            const head = el('div', 'ccdm-slot-head');
            head.append(el('span', 'ccdm-slot-label', frame % this.labelEvery === 0 ? String(frame) : ''),
                el('span', 'ccdm-slot-time', startsSecond && second % this.secondEvery === 0 ? second + 's' : ''));
            slot.appendChild(head);
            const lane = el('div', 'ccdm-lane');
            const kf = this.find(frame);
            if (kf) lane.appendChild(this.renderCard(kf));
            slot.appendChild(lane);
            if (frame < this.frameUrls.length && frame < this.frames) slot.appendChild(this.renderFilm(frame));
            return slot;
        }

        renderCard(kf) {
            const card = el('div', 'ccdm-keyframe');
            card.dataset.frame = kf.frame;
            card.tabIndex = 0;
            card.title = 'Keyframe at frame ' + kf.frame + ' (drag to move; arrows move, Delete removes)';
            card.classList.toggle('selected', kf.frame === this.selected);
            card.classList.toggle('ccdm-outside', kf.frame >= this.frames);
            if (kf.image) {
                const img = el('img', 'ccdm-thumb');
                img.src = kf.image;
                img.alt = 'keyframe ' + kf.frame;
                img.draggable = false;
                card.appendChild(img);
            } else {
                card.appendChild(el('div', 'ccdm-thumb ccdm-noimage', 'no image'));
            }
            card.append(this.strengthInput(kf), this.promptInput(kf), button('ccdm-card-delete', '\u00d7', 'Delete'));
            const controlnet = this.controlNetPart && this.controlNetPart(kf); // only when ControlNet is there
            if (controlnet) card.appendChild(controlnet);
            return card;
        }

        strengthInput(kf) {
            const input = el('input', 'ccdm-strength');
            Object.assign(input, {type: 'number', min: '0', max: '1', step: '0.05'});
            input.value = text.formatNumber(kf.strength);
            input.title = 'Strength (0-1)';
            return input;
        }

        promptInput(kf) {
            const input = el('input', 'ccdm-prompt');
            Object.assign(input, {type: 'text', placeholder: 'prompt (optional)', value: kf.prompt || ''});
            input.title = 'Prompt at this keyframe (optional)';
            return input;
        }

        renderFilm(frame) {
            const film = el('div', 'ccdm-film');
            const img = el('img');
            Object.assign(img, {src: this.frameUrls[frame], loading: 'lazy', draggable: false, alt: 'frame ' + frame});
            const pin = button('ccdm-pin', '\ud83d\udccc', 'Pin as keyframe');
            pin.dataset.frame = frame;
            film.append(img, pin);
            return film;
        }

        renderToolbar() {
            const seconds = text.formatNumber(Number((this.frames / this.fps).toFixed(2)));
            this.info.textContent = this.frames + ' frames \u00b7 ' + seconds + ' s at ' + text.formatNumber(this.fps) +
                ' fps \u00b7 ' + this.keyframes.length + ' keyframe' + (this.keyframes.length === 1 ? '' : 's');
            this.deleteButton.disabled = this.selected === null;
        }

        renderTexts(skip) {
            const values = {strength: text.formatStrengths(this.keyframes), prompt: text.formatPrompts(this.keyframes)};
            for (const kind of Object.keys(values)) {
                const area = this.texts[kind];
                if (kind === skip || area.matches(':focus')) continue;
                area.value = values[kind];
                this.markText(kind, '');
            }
        }

        markText(kind, message) {
            this.texts[kind].classList.toggle('ccdm-invalid', Boolean(message));
            this.texts[kind].setAttribute('aria-invalid', message ? 'true' : 'false');
            this.errors[kind].textContent = message;
        }

        zoom(direction) {
            const old = this.slotWidth || 48;
            const index = SLOT_WIDTHS.indexOf(old);
            const next = direction === 0 ? this.fitWidth() :
                SLOT_WIDTHS[Math.min(SLOT_WIDTHS.length - 1, Math.max(0, index + direction))];
            const centre = (this.scroller.scrollLeft + this.scroller.clientWidth / 2) / old;
            this.slotWidth = next;
            this.autoFit = direction === 0;
            this.render();
            this.scroller.scrollLeft = centre * next - this.scroller.clientWidth / 2;
        }

        frameAt(clientX) {
            const left = this.track.getBoundingClientRect().left;
            return Math.floor((clientX - left) / (this.slotWidth || 48));
        }

        frameOfEvent(event) {
            const slot = event.target.closest && event.target.closest('.ccdm-slot');
            return slot ? Number(slot.dataset.frame) : this.frameAt(event.clientX);
        }

        highlight(frame) {
            this.track.querySelectorAll('.ccdm-drop-target').forEach((n) => n.classList.remove('ccdm-drop-target'));
            const slot = frame === null ? null : this.track.querySelector('.ccdm-slot[data-frame="' + frame + '"]');
            if (slot) slot.classList.add('ccdm-drop-target');
        }
    }

    // ---- initialisation: each element once ---------------------------------------------------------------------

    function attach() {
        app().querySelectorAll('#' + ROOT_ID).forEach((root) => {
            if (root.dataset.ccdmReady) return;
            root.dataset.ccdmReady = '1';
            instances.push(new Timeline(root));
        });
        parts.send.installSendButtons();
    }

    function poll() {
        instances = instances.filter((timeline) => timeline.sync() !== false);
        if (!instances.length || !byId('ccdm_send_txt2img')) attach(); // re-rendered roots, late galleries
    }

    function init() {
        if (!parts.dom || !parts.events) throw new Error('CCDM timeline: ccdm_timeline_util.js or _events.js missing');
        ({app, byId, el, button} = parts.dom);
        [text, images] = [parts.text, parts.images];
        Object.assign(Timeline.prototype, parts.events, parts.controlnet ? parts.controlnet.methods : {});
        attach();
        if (pollTimer === null) pollTimer = setInterval(poll, POLL_MS);
    }

    window.ccdmTimeline = {
        init: init,
        instances: () => instances.slice(),
    };
    if (typeof onUiLoaded === 'function') onUiLoaded(init); // the WebUI calls it once the UI is built
})();
