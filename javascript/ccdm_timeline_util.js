// CCDM keyframe timeline, shared pieces: DOM helpers, the schedule text forms, image downscaling and the "Send to
// txt2vid" buttons. They register on window.ccdmTimelineParts; ccdm_timeline.js takes them at init, after every
// script has loaded, so the order in which the WebUI loads the files does not matter.
(function () {
    'use strict';

    const parts = window.ccdmTimelineParts = window.ccdmTimelineParts || {};
    const TAB_LABEL = 'txt2vid';
    const SEND_SOURCES = ['txt2img', 'img2img'];
    const MAX_PNG_CHARS = 1500000;

    function app() {
        if (typeof gradioApp === 'function') return gradioApp();
        const host = document.querySelector('gradio-app');
        return host ? (host.shadowRoot || host) : document;
    }

    function byId(id) {
        return id ? app().querySelector('#' + CSS.escape(id)) : null;
    }

    function el(tag, className, text) {
        const node = document.createElement(tag);
        if (className) node.className = className;
        if (text !== undefined) node.textContent = text;
        return node;
    }

    function button(className, text, title) {
        const node = el('button', className, text);
        node.type = 'button';
        if (title) { node.title = title; node.setAttribute('aria-label', title); }
        return node;
    }

    // ---- schedule text: `0:(1), 12:(0.6)` and {"0": "a cat", "12": "a dog"} -------------------------------------

    function formatNumber(value) {
        return String(Number(Number(value).toPrecision(6))); // as Python's `:g` for strengths in 0..1
    }

    function formatStrengths(keyframes) {
        return keyframes.map((kf) => kf.frame + ':(' + formatNumber(kf.strength) + ')').join(', ');
    }

    function formatPrompts(keyframes) {
        const items = keyframes.filter((kf) => kf.prompt);
        if (!items.length) return '';
        return '{' + items.map((kf) => JSON.stringify(String(kf.frame)) + ': ' + JSON.stringify(kf.prompt))
            .join(', ') + '}';
    }

    function checkFrame(frame, frames) {
        if (frame >= frames) {
            throw new Error('frame ' + frame + ' is outside the clip (frames 0..' + (frames - 1) + ')');
        }
    }

    function parseStrengths(text, frames) {
        const out = new Map();
        for (const raw of text.split(',')) {
            const item = raw.trim();
            if (!item) continue;
            const m = /^(\d+)\s*:\s*\(\s*([-+0-9.eE]+)\s*\)$/.exec(item);
            if (!m) throw new Error('"' + item + '" is not FRAME:(STRENGTH), e.g. 0:(1.0), 12:(0.6)');
            const frame = Number(m[1]);
            const value = Number(m[2]);
            if (!Number.isFinite(value) || value < 0 || value > 1) {
                throw new Error('strength at frame ' + frame + ' must be a number in 0..1, got ' + m[2]);
            }
            checkFrame(frame, frames);
            if (out.has(frame)) throw new Error('frame ' + frame + ' is named twice');
            out.set(frame, value);
        }
        return out;
    }

    function parsePrompts(text, frames) {
        const out = new Map();
        if (!text.trim()) return out;
        let data;
        try {
            data = JSON.parse(text);
        } catch (err) {
            throw new Error('not JSON (' + err.message + '); e.g. {"0": "a cat", "12": "a dog"}');
        }
        if (!data || typeof data !== 'object' || Array.isArray(data)) {
            throw new Error('must be a JSON object like {"0": "a cat", "12": "a dog"}');
        }
        for (const [key, value] of Object.entries(data)) {
            if (!/^\s*\d+\s*$/.test(key)) throw new Error('key "' + key + '" is not a frame number');
            if (typeof value !== 'string') throw new Error('the prompt at frame ' + key.trim() + ' must be text');
            checkFrame(Number(key), frames);
            out.set(Number(key), value);
        }
        return out;
    }

    function newKeyframe(frame) {
        return {frame: frame, strength: 1, prompt: null, image: null};
    }

    function applyStrengths(base, strengths) {
        // The strength schedule lists the keyframes: a frame left out is removed, a new frame gets a card.
        return Array.from(strengths, ([frame, value]) => {
            const old = base.find((kf) => kf.frame === frame);
            return Object.assign({}, old || newKeyframe(frame), {strength: value});
        });
    }

    function applyPrompts(base, prompts) {
        // The prompt schedule sets the prompts: a keyframe left out has none, a new frame gets a card.
        const out = base.map((kf) => Object.assign({}, kf, {prompt: prompts.get(kf.frame) || null}));
        for (const [frame, prompt] of prompts) {
            if (!out.some((kf) => kf.frame === frame)) out.push(Object.assign(newKeyframe(frame), {prompt: prompt}));
        }
        return out;
    }

    // ---- images: downscaled in the page before they travel ----------------------------------------------------

    function loadImage(src) {
        return new Promise((resolve, reject) => {
            const img = new Image();
            img.onload = () => resolve(img);
            img.onerror = () => reject(new Error('not a readable image'));
            img.src = src;
        });
    }

    async function toDataUrl(blob, maxSide) {
        const url = URL.createObjectURL(blob);
        try {
            const img = await loadImage(url);
            const scale = Math.min(1, maxSide / Math.max(img.naturalWidth, img.naturalHeight));
            const canvas = document.createElement('canvas');
            canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
            canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
            const ctx = canvas.getContext('2d');
            ctx.imageSmoothingQuality = 'high';
            ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
            const png = blob.type === 'image/jpeg' ? '' : canvas.toDataURL('image/png');
            // PNG keeps generated frames exact; photos that make a large PNG travel as JPEG
            return png && png.length <= MAX_PNG_CHARS ? png : canvas.toDataURL('image/jpeg', 0.92);
        } finally {
            URL.revokeObjectURL(url);
        }
    }

    async function urlToDataUrl(src, maxSide) {
        const response = await fetch(src);
        if (!response.ok) throw new Error('cannot load ' + src + ' (HTTP ' + response.status + ')');
        return toDataUrl(await response.blob(), maxSide);
    }

    // ---- "Send to txt2vid" beside the txt2img and img2img galleries ------------------------------------------

    function selectedGalleryImage(gallery) {
        return gallery.querySelector('.preview img') || gallery.querySelector('.thumbnail-item.selected img') ||
            gallery.querySelector('.thumbnail-item img') || gallery.querySelector('img');
    }

    function switchToTab(label) {
        const buttons = app().querySelectorAll('#tabs > .tab-nav > button, #tabs > div > button');
        const tab = Array.from(buttons).find((b) => b.textContent.trim() === label);
        if (tab) tab.click();
        return Boolean(tab);
    }

    async function sendToTimeline(source) {
        const gallery = byId(source + '_gallery');
        const img = gallery && selectedGalleryImage(gallery);
        const timeline = window.ccdmTimeline.instances().find((t) => t.root.isConnected);
        if (!img || !timeline) return;
        switchToTab(TAB_LABEL);
        try {
            timeline.setImage(0, await urlToDataUrl(img.src, timeline.maxSide));
            timeline.status('Image from ' + source + ' placed at frame 0.', false);
        } catch (err) {
            timeline.status('Send to txt2vid failed: ' + err.message, true);
        }
    }

    function installSendButtons() {
        for (const source of SEND_SOURCES) {
            const gallery = byId(source + '_gallery');
            if (!gallery || byId('ccdm_send_' + source)) continue;
            const row = byId('image_buttons_' + source);
            const model = row && row.querySelector('button');
            const send = button(model ? model.className : 'lg secondary gradio-button tool', '\ud83c\udf9e\ufe0f',
                'Send to txt2vid (the selected image becomes the keyframe at frame 0)');
            send.id = 'ccdm_send_' + source;
            send.classList.add('ccdm-send');
            send.addEventListener('click', () => sendToTimeline(source));
            if (row) row.appendChild(send); else gallery.insertAdjacentElement('afterend', send);
        }
    }

    parts.dom = {app: app, byId: byId, el: el, button: button, switchToTab: switchToTab};
    parts.text = {formatNumber: formatNumber, formatStrengths: formatStrengths, formatPrompts: formatPrompts,
        parseStrengths: parseStrengths, parsePrompts: parsePrompts, applyStrengths: applyStrengths,
        applyPrompts: applyPrompts, newKeyframe: newKeyframe};
    parts.images = {toDataUrl: toDataUrl, urlToDataUrl: urlToDataUrl};
    parts.send = {installSendButtons: installSendButtons};
})();
