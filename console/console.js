/* The hotline staff console: calls /api/v1 with the session cookie and, on every write, the
 * X-CSRF-Token header. Every text from the API or a citizen goes in with textContent, never as HTML. */
"use strict";

(function () {
  var $ = function (id) { return document.getElementById(id); };
  var state = { user: null, role: null, csrf: null, dossier: null, conv: null, otp: null,
    canned: [] };
  var LABELS = {
    code: "Mã hồ sơ", national_code: "Mã quốc gia", procedure: "Thủ tục", applicant: "Người nộp",
    phone: "Điện thoại", agency: "Cơ quan", received_at: "Ngày tiếp nhận", due_at: "Hẹn trả",
    status: "Mã trạng thái", status_text: "Trạng thái", note: "Ghi chú",
    subscribers: "Người theo dõi", notifications: "Thông báo đã gửi"
  };

  function show(el, text) {
    el.textContent = text;
    el.hidden = !text;
  }

  function save() {
    if (state.csrf)
      sessionStorage.setItem("dvcgw", JSON.stringify({ user: state.user, role: state.role,
        csrf: state.csrf }));
    else
      sessionStorage.removeItem("dvcgw");
  }

  function signedIn(on) {
    $("login-view").hidden = on;
    $("app-view").hidden = !on;
    $("who").hidden = !on;
    $("who-name").textContent = on ? state.user + (state.role ? " (" + state.role + ")" : "") : "";
    $("users-section").hidden = !(on && state.role === "supervisor");
  }

  function signOutLocally(msg) {
    state.user = state.role = state.csrf = null;
    save();
    signedIn(false);
    show($("flash"), msg || "");
  }

  /* One API call: JSON in and out; resolves {status, body} whatever the status. A 401 on a call
   * other than the sign-in means the session ended: back to the sign-in form. */
  function api(method, path, body) {
    var opts = { method: method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    if (method !== "GET" && method !== "HEAD" && state.csrf)
      opts.headers["X-CSRF-Token"] = state.csrf;
    return fetch(path, opts).then(function (r) {
      return r.text().then(function (t) {
        var j = null;
        try { j = t ? JSON.parse(t) : null; } catch (e) { j = null; }
        if (r.status === 401 && path !== "/api/v1/login")
          signOutLocally("Phiên làm việc đã hết hạn, mời đăng nhập lại.");
        return { status: r.status, body: j };
      });
    }, function () {
      return { status: 0, body: { message: "Không kết nối được máy chủ." } };
    });
  }

  function sentence(res, fallback) {
    if (res.body && typeof res.body.message === "string" && res.body.message)
      return res.body.message;
    return fallback + " (HTTP " + res.status + ")";
  }

  function asText(v) {
    if (v === null || v === undefined)
      return "";
    if (typeof v === "object")
      return JSON.stringify(v);
    return String(v);
  }

  /* A list (subscribers, notifications) as one line per item: "name: value · name: value". */
  function listOf(items) {
    var ul = document.createElement("ul"), i, li, it;

    ul.className = "items";
    for (i = 0; i < items.length; i++) {
      it = items[i];
      li = document.createElement("li");
      if (it !== null && typeof it === "object" && !Array.isArray(it))
        li.textContent = Object.keys(it).map(function (k) {
          return (LABELS[k] || k) + ": " + asText(it[k]);
        }).join(" · ");
      else
        li.textContent = asText(it);
      ul.appendChild(li);
    }
    if (items.length === 0) {
      li = document.createElement("li");
      li.textContent = "(không có)";
      ul.appendChild(li);
    }
    return ul;
  }

  /* A time from the API in the staff member's local time, or as sent when it is not one. */
  function when(at) {
    var t = new Date(at);
    return isNaN(t.getTime()) ? asText(at) : t.toLocaleString("vi-VN");
  }

  /* ---- sign in and out ---- */
  $("login-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    show($("login-error"), "");
    $("login-submit").disabled = true;
    api("POST", "/api/v1/login", { user: $("login-user").value,
      password: $("login-password").value }).then(function (res) {
      $("login-submit").disabled = false;
      $("login-password").value = "";
      if (res.status !== 200 || !res.body || !res.body.csrf) {
        show($("login-error"), sentence(res, "Đăng nhập không thành công"));
        return;
      }
      state.user = res.body.user;
      state.role = res.body.role;
      state.csrf = res.body.csrf;
      save();
      show($("flash"), "");
      signedIn(true);
      $("dossier-code").focus();
    });
  });

  $("logout").addEventListener("click", function () {
    api("POST", "/api/v1/logout", {}).then(function () {
      signOutLocally("Đã đăng xuất.");
    });
  });

  /* ---- dossiers ---- */
  function renderDossier(d) {
    var dl = $("dossier-fields"), keys = Object.keys(d), i, dt, dd;

    dl.textContent = "";
    for (i = 0; i < keys.length; i++) {
      dt = document.createElement("dt");
      dt.textContent = LABELS[keys[i]] || keys[i];
      dd = document.createElement("dd");
      if (Array.isArray(d[keys[i]]))
        dd.appendChild(listOf(d[keys[i]]));
      else
        dd.textContent = asText(d[keys[i]]);
      dd.setAttribute("data-field", keys[i]);
      dl.appendChild(dt);
      dl.appendChild(dd);
    }
    if (typeof d.status === "number")
      $("status-value").value = String(d.status);
    $("dossier").hidden = false;
  }

  function loadDossier(code) {
    show($("dossier-error"), "");
    return api("GET", "/api/v1/dossiers/" + encodeURIComponent(code)).then(function (res) {
      if (res.status !== 200 || !res.body) {
        state.dossier = null;
        $("dossier").hidden = true;
        show($("dossier-error"), sentence(res, "Không tìm được hồ sơ"));
        return;
      }
      state.dossier = res.body;
      renderDossier(res.body);
    });
  }

  $("dossier-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    show($("status-result"), "");
    loadDossier($("dossier-code").value.trim());
  });

  $("status-form").addEventListener("submit", function (ev) {
    var code, body;

    ev.preventDefault();
    if (!state.dossier)
      return;
    code = state.dossier.code;
    body = { status: parseInt($("status-value").value, 10) };
    if ($("status-note").value.trim())
      body.note = $("status-note").value.trim();
    $("status-submit").disabled = true;
    api("POST", "/api/v1/dossiers/" + encodeURIComponent(code) + "/status", body)
      .then(function (res) {
        $("status-submit").disabled = false;
        if (res.status >= 200 && res.status < 300) {
          show($("status-result"), "Đã cập nhật trạng thái hồ sơ " + code + ".");
          $("status-note").value = "";
          return loadDossier(code);
        }
        show($("status-result"), sentence(res, "Không cập nhật được trạng thái"));
      });
  });

  $("notify-submit").addEventListener("click", function () {
    var code;

    if (!state.dossier)
      return;
    code = state.dossier.code;
    api("POST", "/api/v1/dossiers/" + encodeURIComponent(code) + "/notify", {})
      .then(function (res) {
        if (res.status >= 200 && res.status < 300)
          show($("status-result"), "Đã gửi trạng thái cho " +
            asText(res.body && res.body.queued) + " người nhận.");
        else
          show($("status-result"), sentence(res, "Không gửi được trạng thái"));
      });
  });

  /* ---- conversations ---- */
  function renderConv(c) {
    var ol = $("conv-messages"), msgs = c.messages || [], i, li, meta, text;

    $("conv-title").textContent = (c.channel === "zalo" ? "Zalo " : "SMS ") + asText(c.user);
    ol.textContent = "";
    if (msgs.length === 0) {
      li = document.createElement("li");
      li.className = "empty";
      li.textContent = "Chưa có tin nhắn.";
      ol.appendChild(li);
    }
    for (i = 0; i < msgs.length; i++) {
      li = document.createElement("li");
      li.className = msgs[i].direction === "in" ? "in" : "out";
      meta = document.createElement("span");
      meta.className = "meta";
      meta.textContent = (msgs[i].direction === "in" ? "Công dân" : "Tổng đài") + " · " +
        when(msgs[i].at);
      text = document.createElement("span");
      text.className = "text";
      text.textContent = asText(msgs[i].text);
      li.appendChild(meta);
      li.appendChild(text);
      ol.appendChild(li);
    }
    $("conv").hidden = false;
  }

  function loadConv(channel, user) {
    show($("conv-error"), "");
    return api("GET", "/api/v1/conversations/" + encodeURIComponent(channel) + "/" +
      encodeURIComponent(user)).then(function (res) {
      if (res.status !== 200 || !res.body) {
        state.conv = null;
        $("conv").hidden = true;
        show($("conv-error"), sentence(res, "Không mở được hội thoại"));
        return;
      }
      state.conv = { channel: channel, user: user };
      renderConv(res.body);
    });
  }

  $("conv-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    show($("reply-result"), "");
    loadConv($("conv-channel").value, $("conv-user").value.trim());
  });

  /* A canned reply with {{name}} filled from the dossier on screen (left as is without one). */
  function fill(text) {
    return text.replace(/\{\{\s*([a-z_]+)\s*\}\}/g, function (all, name) {
      if (state.dossier && state.dossier[name] !== undefined && state.dossier[name] !== null)
        return asText(state.dossier[name]);
      return all;
    });
  }

  $("canned").addEventListener("change", function () {
    var c = state.canned[parseInt($("canned").value, 10)];
    if (c)
      $("reply-text").value = fill(c.text);
  });

  function loadCanned() {
    fetch("canned.json", { credentials: "same-origin" }).then(function (r) {
      return r.ok ? r.json() : [];
    }).then(function (list) {
      var sel = $("canned"), i, o;
      state.canned = Array.isArray(list) ? list.filter(function (c) {
        return c && typeof c.title === "string" && typeof c.text === "string";
      }) : [];
      for (i = 0; i < state.canned.length; i++) {
        o = document.createElement("option");
        o.value = String(i);
        o.textContent = state.canned[i].title;
        sel.appendChild(o);
      }
    }, function () { state.canned = []; });
  }

  $("reply-form").addEventListener("submit", function (ev) {
    var conv = state.conv, text = $("reply-text").value;

    ev.preventDefault();
    if (!conv || !text.trim())
      return;
    $("reply-send").disabled = true;
    api("POST", "/api/v1/messages", { channel: conv.channel, to: conv.user, text: text })
      .then(function (res) {
        $("reply-send").disabled = false;
        if (res.status === 202) {
          show($("reply-result"), "Đã gửi trả lời.");
          $("reply-text").value = "";
          $("canned").value = "";
          return loadConv(conv.channel, conv.user);
        }
        show($("reply-result"), sentence(res, "Không gửi được trả lời"));
      });
  });

  /* ---- a phone's OTP: when and how it went, its delivery, a resend within the limits ---- */
  var OTP_STATUS = { pending: "Đang chờ nhập mã", expired: "Đã hết hạn", approved: "Đã xác thực",
    canceled: "Đã huỷ", max_attempts_reached: "Nhập sai quá số lần", dead: "Không gửi được" };
  var DELIVERY = { queued: "đang chờ gửi", sent: "đã chuyển cho nhà mạng", delivered: "đã đến máy",
    failed: "không gửi được" };

  function renderOtp(j) {
    var dl = $("otp-fields"), ol = $("otp-sends"), o = j.otp, rows, i, dt, dd, li;

    dl.textContent = "";
    ol.textContent = "";
    if (!o) {
      li = document.createElement("li");
      li.className = "empty";
      li.textContent = "Chưa có mã OTP nào gửi tới số " + asText(j.phone) + " gần đây.";
      ol.appendChild(li);
      $("otp-resend").disabled = true;
      $("otp").hidden = false;
      return;
    }
    rows = [["Số điện thoại", j.phone], ["Trạng thái", OTP_STATUS[o.status] || o.status],
      ["Mục đích", o.purpose], ["Kênh", o.channel === "zalo" ? "Zalo (ZNS)" : "SMS"],
      ["Hết hạn lúc", when(o.expires)], ["Số lần gửi", o.sends]];
    for (i = 0; i < rows.length; i++) {
      dt = document.createElement("dt");
      dt.textContent = rows[i][0];
      dd = document.createElement("dd");
      dd.textContent = asText(rows[i][1]);
      dl.appendChild(dt);
      dl.appendChild(dd);
    }
    for (i = 0; o.log && i < o.log.length; i++) {
      li = document.createElement("li");
      li.className = "send";
      li.textContent = (o.log[i].channel === "zalo" ? "Zalo" : "SMS") + " · " +
        when(o.log[i].at) + " · " + (DELIVERY[o.log[i].delivery] || asText(o.log[i].delivery));
      ol.appendChild(li);
    }
    $("otp-resend").disabled = !o.live;
    $("otp").hidden = false;
  }

  function loadOtp(phone) {
    show($("otp-error"), "");
    return api("GET", "/api/v1/phones/" + encodeURIComponent(phone) + "/otp").then(function (res) {
      if (res.status !== 200 || !res.body) {
        state.otp = null;
        $("otp").hidden = true;
        show($("otp-error"), sentence(res, "Không xem được mã OTP"));
        return;
      }
      state.otp = res.body.phone;
      renderOtp(res.body);
    });
  }

  $("otp-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    show($("otp-result"), "");
    loadOtp($("otp-phone").value.trim());
  });

  $("otp-resend").addEventListener("click", function () {
    var phone = state.otp;

    if (!phone)
      return;
    $("otp-resend").disabled = true;
    api("POST", "/api/v1/phones/" + encodeURIComponent(phone) + "/otp/resend", {})
      .then(function (res) {
        if (res.status === 200) {
          show($("otp-result"), "Đã gửi lại mã qua SMS.");
          return loadOtp(phone);
        }
        $("otp-resend").disabled = false;
        show($("otp-result"), sentence(res, "Không gửi lại được mã"));
      });
  });

  /* ---- staff accounts (supervisors): disable and enable ---- */
  function renderUsers(list) {
    var tb = $("users-body"), i, tr, td, b;

    tb.textContent = "";
    for (i = 0; i < list.length; i++) {
      tr = document.createElement("tr");
      [list[i].name, list[i].role === "supervisor" ? "Giám sát" : "Nhân viên",
        list[i].disabled ? "Đã khoá" : "Đang hoạt động"].forEach(function (t) {
        td = document.createElement("td");
        td.textContent = asText(t);
        tr.appendChild(td);
      });
      td = document.createElement("td");
      if (list[i].name !== state.user) {
        b = document.createElement("button");
        b.type = "button";
        b.className = "secondary";
        b.setAttribute("data-user", list[i].name);
        b.setAttribute("data-action", list[i].disabled ? "enable" : "disable");
        b.textContent = list[i].disabled ? "Mở khoá" : "Khoá";
        td.appendChild(b);
      }
      tr.appendChild(td);
      tb.appendChild(tr);
    }
    $("users").hidden = false;
  }

  function loadUsers() {
    show($("users-error"), "");
    return api("GET", "/api/v1/users").then(function (res) {
      if (res.status !== 200 || !res.body || !Array.isArray(res.body.users)) {
        $("users").hidden = true;
        show($("users-error"), sentence(res, "Không tải được danh sách tài khoản"));
        return;
      }
      renderUsers(res.body.users);
    });
  }

  $("users-load").addEventListener("click", loadUsers);
  $("users-body").addEventListener("click", function (ev) {
    var b = ev.target, name, action;

    if (!b || b.tagName !== "BUTTON")
      return;
    name = b.getAttribute("data-user");
    action = b.getAttribute("data-action");
    b.disabled = true;
    api("POST", "/api/v1/users/" + encodeURIComponent(name) + "/" + action, {})
      .then(function (res) {
        if (res.status !== 200)
          show($("users-error"), sentence(res, "Không đổi được tài khoản"));
        return loadUsers();
      });
  });

  /* ---- start: a session kept in this tab survives a reload; the server still decides. ---- */
  try {
    var kept = JSON.parse(sessionStorage.getItem("dvcgw") || "null");
    if (kept && kept.csrf) {
      state.user = kept.user;
      state.role = kept.role;
      state.csrf = kept.csrf;
    }
  } catch (e) { sessionStorage.removeItem("dvcgw"); }
  signedIn(!!state.csrf);
  loadCanned();
}());
